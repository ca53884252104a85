"""The durable batch writer: ring buffer -> binary COPY, spool when PostgreSQL is away.

Producers (proxy hooks) call :meth:`BatchWriter.enqueue`, which never blocks and never touches the
network: the event goes into a bounded buffer (capacity 10,000), or, when the buffer is full, into
the on-disk spool. One background thread drains the buffer every 100 ms, or as soon as 100 events
wait, into one ``COPY ... (FORMAT BINARY)`` per batch, upserts the sessions' chain heads and sends
``NOTIFY govrix_events, '<max id>'`` in the same transaction.

When a batch fails for a connection reason its outcome is unknown (it may have committed just
before the connection broke), so it goes to the spool, and spool records are replayed through a
staging table with ``ON CONFLICT DO NOTHING``: at least once on the wire, exactly once in the
table. While the spool holds anything, it is replayed first so events land in order.

Rows that PostgreSQL rejects for their content (not for the connection) are retried one by one;
a row that still fails is written to ``deadletter.jsonl`` beside the spool, counted and logged.
That file is for database faults only: text PostgreSQL cannot store (NUL, lone surrogates) is
escaped by ``addon/sanitize.py`` before the event is chained, and a row that arrives without it
is escaped here rather than refused. Nothing leaves this package silently.

A row whose id is stored already (a capture the proxy sent again to a new recorder because the
old one died before it could say so) fails the batch's COPY; the staging path then skips it and
counts it as ``already_present``, not as rejected. ``on_durable`` is told the ids of every event
that can no longer be lost with this process: committed, appended to the spool, or dead-lettered.

Where each part lives. At run time the recorder (``addon/recorder``) is the one caller; the
inline scorer (``addon/mcp.py``) builds ``ScoreRow``; ``scripts/bench_writer.py`` and the tests
use ``BatchWriter`` directly.

- ``batch.py``: ``BatchWriter``, the conductor: buffer, thread, connection, the COPY of a batch,
  spooling, and what every event's outcome is told to (``stats``, ``on_commit``, ``on_durable``).
- ``rows.py``: a batch as rows: the binary COPY (``PG_TYPES`` of ``addon/event.py``) and the
  sessions' chain heads with the NOTIFY.
- ``staging.py``: the idempotent path through ``govrix_stage`` (spool replay, resends, a batch
  settled row by row) and the dead-letter file.
- ``partitions.py``: daily partitions for the days a batch needs, hourly upkeep and retention.
- ``agents.py``: agents seen by the proxy, upserted at the next flush.
- ``scores.py``: inline score rows (``actions`` + ``scores``), bounded while they wait.
- ``stats.py``: ``WriterStats``, the counters that tell the story of every event.
"""

from __future__ import annotations

from addon.writer.agents import AgentSighting
from addon.writer.batch import BatchWriter
from addon.writer.scores import ScoreRow
from addon.writer.stats import WriterStats

__all__ = ["AgentSighting", "BatchWriter", "ScoreRow", "WriterStats"]
