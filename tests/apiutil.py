"""Helpers for the API tests: load events through the real writer, run a real uvicorn server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from addon.event import Event
from addon.writer import BatchWriter
from api.app import create_app

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def write_events(dsn: str, events: list[Event], spool_dir: Path) -> None:
    """Write through BatchWriter: binary COPY, sessions upsert and NOTIFY govrix_events."""
    w = BatchWriter(dsn, spool_dir).start()
    try:
        for ev in events:
            w.enqueue(ev)
        assert w.flush(30), w.stats.snapshot()
    finally:
        w.stop()
    assert w.stats.written == len(events), w.stats.snapshot()


def add_agent(db: psycopg.Connection[Any], agent_id: str, name: str, **cols: Any) -> None:
    db.execute(
        "INSERT INTO agents (id, name, source_ip, status) VALUES (%s, %s, %s, %s)",
        (agent_id, name, cols.get("source_ip", "10.0.0.1"), cols.get("status", "active")),
    )


class LiveServer:
    """uvicorn serving ``create_app(...)`` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, dsn: str, **app_kwargs: Any) -> None:
        self.app = create_app(dsn, KEY, **app_kwargs)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            ws="none",
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # The stream hub LISTENs asynchronously: wait until it does, so no NOTIFY is missed.
        while (
            httpx.get(f"{self.url}/metrics").text.find("govrix_api_sse_listener_connected 1.0") < 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("stream listener did not connect")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@contextmanager
def live_server(dsn: str, **app_kwargs: Any) -> Iterator[LiveServer]:
    srv = LiveServer(dsn, **app_kwargs).start()
    try:
        yield srv
    finally:
        srv.stop()
