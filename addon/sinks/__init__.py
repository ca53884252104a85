"""How captures reach the recorder: a child process through a pipe, or a recorder in-process.

``ProcessSink`` (``process.py``, the default for a live proxy) starts ``python -m addon.recorder``
and writes frames to its stdin without ever blocking the event loop: messages wait in an
in-memory outbox until the pipe takes them (``add_writer``), and answers are read with
``add_reader``.

A capture is not forgotten once it is in the pipe (``retention.py``): the sink keeps every frame
of a call (by its key) until the recorder answers ``Durable`` for the call's last event (its
response event; for a call the proxy answered itself, its request event), i.e. until that event
is committed to PostgreSQL or appended to the spool file. If the child dies, every call it had not
made durable is handed back to the owner (``on_death(lost, waiting)``), in order and whole (Begin,
Stream, Chunks, End), the ``Begin`` marked ``resent`` (and ``recorded`` when its request event is
durable), for a new recorder process (or, if they keep dying, one in-process). ``lost`` counts the
events that cannot be recovered; normally 0. Retention is per call, so a long stream pins only
itself.

What is not kept: ``AgentSeen`` and ``Score`` messages once they are in the pipe (an agent's
registration and ``last_seen_at``, sent again with its first call a minute or more later; an
inline MCP score row, whose call's own events are kept); those still in the outbox are handed
over. Past ``MAX_RETAINED_BYTES`` kept, a call's captures are sent without a copy (``unguarded``,
counted and logged): its events are lost only if the recorder dies before they are durable, and
then they are counted in ``lost``. Past ``MAX_OUTBOX_BYTES`` waiting for the pipe, new captures
are dropped (``dropped``, as before).

``InlineSink`` (``inline.py``) runs the recorder in the proxy's own process: at once (offline
replay) or right after the current hook returns (``GOVRIX_RECORDER=inline``, or after children
kept dying). ``addon/supervisor.py`` chooses and replaces the sink.
"""

from __future__ import annotations

from addon.sinks.inline import InlineSink
from addon.sinks.process import ProcessSink

__all__ = ["InlineSink", "ProcessSink"]
