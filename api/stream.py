"""``GET /api/v1/events/stream``: Server-Sent Events fed by one ``LISTEN govrix_events`` per process.

The hub
    One task per API process holds a dedicated autocommit connection that LISTENs. A NOTIFY (its
    payload is the max id of a committed batch) or a poll every ``poll_interval`` wakes it; it
    then reads the events it has not seen yet and fans each one, encoded once, out to the
    subscribers whose filters match.

    Ids are ``evt_`` + ULID, time-ordered per proxy, but batches of several proxies commit in any
    order: a batch holding smaller ids can commit after a NOTIFY carrying a larger id. So the hub
    re-reads a ``lookback`` window below its high-water id (first the ids only, then the rows it
    has not sent) and keeps the ids it sent inside that window to drop duplicates.

Subscribers
    Each one has a bounded queue (``queue_size``). The hub never waits for a subscriber: when a
    queue is full, that subscriber is switched to *catch-up* mode and the hub stops feeding it.
    Once the subscriber has written out what its queue held, it re-reads the database by its own
    last sent id (pages of ``_PAGE`` rows, with its filters) until it has caught up, then goes
    live again. A slow client therefore costs its own database reads, never the others' latency,
    and its memory stays bounded by the queue size. Nothing is lost or repeated except that an
    event committed later than the lookback window with an id below one already sent is not
    replayed (documented in docs/api.md).

Resuming
    ``Last-Event-ID`` (header, or query ``last_event_id``) replays ``id > last`` from the database
    in id order, then goes live; live rows that the replay already sent are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import psycopg
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import Stream
from psycopg import AsyncConnection, sql

from addon import ids
from api.db import EVENT_COLUMNS
from api.errors import bad_request, error_responses
from api.events import EventFilters, IdFilter, Pool, PoolDep
from api.metrics import ApiMetrics
from api.schemas import EventOut

log = logging.getLogger("govrix.api.stream")

_PAGE = 500
_ID_SCAN_LIMIT = 10_000
_RECENT = 4096  # ids each subscriber remembers to skip duplicates between replay and live

_encode = msgspec.json.Encoder().encode


def id_floor(event_id: str, lookback_ms: int) -> str:
    """The smallest possible event id created ``lookback_ms`` before ``event_id``'s ULID time."""
    prefix, _, body = event_id.rpartition("_")
    try:
        ms = ids.ulid_time_ms(body) if len(body) == 26 else None
    except ValueError:
        ms = None
    if ms is None:
        return event_id  # not a ULID we can reason about: no lookback
    return f"{prefix}_{ids.ulid_floor(ms - lookback_ms)}"


class Item(msgspec.Struct, gc=False):
    """One event ready to send: routing keys plus its JSON, encoded once for all subscribers."""

    id: str
    agent_id: str
    session_id: str
    data: bytes


def to_item(row: tuple[Any, ...]) -> Item:
    ev = EventOut(*row)
    return Item(ev.id, ev.agent_id, ev.session_id, _encode(ev))


def sse_message(item: Item) -> bytes:
    return b"id: %s\nevent: agent_event\ndata: %s\n\n" % (item.id.encode(), item.data)


class Subscriber:
    """One SSE connection: its filters, bounded queue, catch-up flag and recently sent ids."""

    __slots__ = ("agent_id", "last_id", "overflowed", "queue", "recent", "session_id")

    def __init__(self, agent_id: str | None, session_id: str | None, queue_size: int) -> None:
        self.agent_id = agent_id
        self.session_id = session_id
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self.overflowed = False
        self.last_id: str | None = None  # highest id sent
        self.recent: OrderedDict[str, None] = OrderedDict()

    def wants(self, item: Item) -> bool:
        return (self.agent_id is None or item.agent_id == self.agent_id) and (
            self.session_id is None or item.session_id == self.session_id
        )

    def sent(self, item: Item) -> bool:
        """Record ``item`` as sent; False when it already was (skip it)."""
        if item.id in self.recent:
            return False
        self.recent[item.id] = None
        if len(self.recent) > _RECENT:
            self.recent.popitem(last=False)
        if self.last_id is None or item.id > self.last_id:
            self.last_id = item.id
        return True


class StreamHub:
    """The per-process LISTEN task and the set of subscribers it feeds (module docstring)."""

    def __init__(
        self,
        conninfo: str,
        metrics: ApiMetrics,
        *,
        queue_size: int = 1000,
        lookback_ms: int = 2000,
        poll_interval: float = 1.0,
    ) -> None:
        self.conninfo = conninfo
        self.metrics = metrics
        self.queue_size = queue_size
        self.lookback_ms = lookback_ms
        self.poll_interval = poll_interval
        self.subscribers: set[Subscriber] = set()
        self._hw: str | None = None  # highest event id seen
        self._seen: OrderedDict[str, None] = OrderedDict()  # ids sent, ascending-ish
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="govrix-sse-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, agent_id: str | None, session_id: str | None) -> Subscriber:
        sub = Subscriber(agent_id, session_id, self.queue_size)
        sub.last_id = self._hw  # "now": an overflow catch-up never reaches further back
        self.subscribers.add(sub)
        self.metrics.sse_subscribers.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.metrics.sse_subscribers.set(len(self.subscribers))

    # -- the listener --------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                conn = await AsyncConnection.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="govrix-api-listen",
                    options="-c TimeZone=UTC",
                )
                async with conn:
                    await conn.execute("LISTEN govrix_events")
                    if self._hw is None:
                        row = await (await conn.execute("SELECT max(id) FROM events")).fetchone()
                        self._hw = row[0] if row else None
                    self.connected.set()
                    self.metrics.sse_listener_up.set(1)
                    backoff = 0.2
                    # What was committed while we were away.
                    await self._fetch(conn, publish=bool(self.subscribers))
                    await self._listen(conn)
            except psycopg.Error as e:
                log.warning("stream listener: %s; reconnecting in %.1fs", e, backoff)
            except Exception:  # a bug must not end the stream for good: log, back off, retry
                log.exception("stream listener failed; restarting in %.1fs", backoff)
            finally:
                self.connected.clear()
                self.metrics.sse_listener_up.set(0)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _listen(self, conn: AsyncConnection[tuple[Any, ...]]) -> None:
        last_fetch = time.monotonic()
        while True:
            notified: str | None = None
            async for n in conn.notifies(timeout=self.poll_interval, stop_after=1):
                notified = n.payload
            # The poll is a safety net for subscribers (a NOTIFY lost in a reconnect).
            due = bool(self.subscribers) and time.monotonic() - last_fetch >= self.poll_interval
            if notified is None and not due:
                continue
            # With nobody listening, only mark what is there as seen (ids, no rows), so that a
            # later subscriber is not handed the lookback window as if it were new.
            await self._fetch(conn, publish=bool(self.subscribers))
            last_fetch = time.monotonic()

    async def _fetch(self, conn: AsyncConnection[tuple[Any, ...]], *, publish: bool = True) -> None:
        """Read unseen events above ``hw - lookback`` and fan them out, in id order.

        With ``publish=False`` only their ids are read and remembered as seen.
        """
        if not self._hw:
            floor = ""
        elif publish:
            floor = id_floor(self._hw, self.lookback_ms)
        else:
            floor = self._hw  # nobody to deliver to: read each new id once, skip the look-back
        while True:
            cur = await conn.execute(
                "SELECT id FROM events WHERE id > %s ORDER BY id LIMIT %s",
                (floor, _ID_SCAN_LIMIT),
            )
            ids = [r[0] for r in await cur.fetchall()]
            new = [i for i in ids if i not in self._seen]
            if not publish:
                for i in new:
                    self._mark(i)
                new = []
            for start in range(0, len(new), _PAGE):
                chunk = new[start : start + _PAGE]
                q = sql.SQL("SELECT {} FROM events WHERE id = ANY(%s) ORDER BY id").format(
                    EVENT_COLUMNS
                )
                rows = await (await conn.execute(q, (chunk,))).fetchall()
                self.metrics.sse_fetched.inc(len(rows))
                for row in rows:
                    self._publish(to_item(row))
            if len(ids) < _ID_SCAN_LIMIT:
                break
            floor = ids[-1]
        self._forget_below(id_floor(self._hw, self.lookback_ms) if self._hw else "")

    def _mark(self, event_id: str) -> None:
        self._seen[event_id] = None
        if self._hw is None or event_id > self._hw:
            self._hw = event_id

    def _publish(self, item: Item) -> None:
        self._mark(item.id)
        for sub in self.subscribers:
            if sub.overflowed or not sub.wants(item):
                continue
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                sub.overflowed = True
                self.metrics.sse_overflows.inc()

    def _forget_below(self, floor: str) -> None:
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if oldest > floor:
                break
            seen.popitem(last=False)


async def read_after(pool: Pool, after: str, sub: Subscriber, limit: int = _PAGE) -> list[Item]:
    """Events with ``id > after`` matching the subscriber's filters, ascending (replay/catch-up)."""
    filters, params = EventFilters(agent_id=sub.agent_id, session_id=sub.session_id).conditions()
    conds = [sql.SQL("id > %s"), *filters]
    params.insert(0, after)
    q = sql.SQL("SELECT {} FROM events WHERE {} ORDER BY id LIMIT %s").format(
        EVENT_COLUMNS, sql.SQL(" AND ").join(conds)
    )
    async with pool.connection() as conn:
        rows = await (await conn.execute(q, [*params, limit])).fetchall()
    return [to_item(r) for r in rows]


async def event_source(
    hub: StreamHub,
    pool: Pool,
    filters: tuple[str | None, str | None],
    last_event_id: str | None,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """The SSE body of one subscriber: replay, then live with keepalives and catch-up."""
    metrics = hub.metrics
    # Subscribe before replaying so nothing committed during the replay falls in between.
    sub = hub.subscribe(*filters)
    try:
        yield b": connected\n\n"  # headers and a first byte now: clients see the stream open
        if last_event_id is not None:
            sub.last_id = last_event_id
            async for chunk in _catch_up(pool, sub, metrics):
                yield chunk
        while True:
            if sub.overflowed and sub.queue.empty():
                # Everything queued before the overflow is out; the rest comes from the database.
                sub.overflowed = False
                async for chunk in _catch_up(pool, sub, metrics):
                    yield chunk
                continue
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=keepalive)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if sub.sent(item):
                metrics.sse_sent.inc()
                yield sse_message(item)
    finally:
        hub.unsubscribe(sub)


async def _catch_up(pool: Pool, sub: Subscriber, metrics: ApiMetrics) -> AsyncIterator[bytes]:
    while True:
        items = await read_after(pool, sub.last_id or "", sub)
        for item in items:
            if sub.sent(item):
                metrics.sse_sent.inc()
                yield sse_message(item)
        if len(items) < _PAGE:
            return


class StreamController(Controller):
    """The live event stream."""

    path = "/events/stream"
    tags = ["events"]

    @get(
        "/",
        operation_id="streamEvents",
        media_type="text/event-stream",
        responses=error_responses(400, 401),
    )
    async def stream(
        self,
        pool: PoolDep,
        hub: NamedDependency[StreamHub],
        keepalive_interval: NamedDependency[float],
        agent_id: IdFilter = None,
        session_id: IdFilter = None,
        last_event_id: Annotated[
            str | None,
            QueryParameter(
                max_length=200, description="Resume after this event id (as the header does)."
            ),
        ] = None,
        last_event_id_header: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=200, required=False)
        ] = None,
    ) -> Stream:
        """Server-Sent Events: ``event: agent_event``, the event's JSON as ``data``, its id as ``id``.

        Reconnect with ``Last-Event-ID`` to receive exactly what was missed, in order. A
        ``: keepalive`` comment is sent every 15 s without events.
        """
        return sse_response(
            hub,
            pool,
            agent_id,
            session_id,
            last_event_id_header or last_event_id,
            keepalive_interval,
        )


def sse_response(
    hub: StreamHub,
    pool: Pool,
    agent_id: str | None,
    session_id: str | None,
    resume: str | None,
    keepalive: float,
) -> Stream:
    """The SSE response of one subscriber: this route's, and the console's Live page's
    (api/console/live.py), so both filter and resume exactly alike."""
    # Checked here: once the stream has started, an error can no longer become a 400.
    for name, value in (
        ("agent_id", agent_id),
        ("session_id", session_id),
        ("last_event_id", resume),
    ):
        if value is not None and "\x00" in value:
            raise bad_request(name, "NUL bytes are not allowed")
    return Stream(
        event_source(hub, pool, (agent_id, session_id), resume, keepalive),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
