"""Helpers for the scoring-route tests: events, keys, a real uvicorn subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from scripts.apikey import create_key

ROOT = Path(__file__).resolve().parents[1]


def event(event_id: str, action: str = "mcp:github:repo.read", **extra: Any) -> dict[str, Any]:
    """A seed-shaped event (seeds/003)."""
    return {"event_id": event_id, "action": action, "timestamp": "2026-02-26T10:00:00Z", **extra}


def full_event(event_id: str, agent: str = "code-review-bot") -> dict[str, Any]:
    """The seed's complete example event."""
    return {
        "event_id": event_id,
        "action": "mcp:github:pr.create",
        "timestamp": "2026-02-26T10:00:00Z",
        "agent": {"agent_id": agent, "agent_type": "code_review", "framework": "langchain"},
        "session": {"session_id": "sess-123", "user_id": "user-456"},
        "target": {
            "resource_type": "repository",
            "resource_id": "org/repo",
            "sensitivity_level": 2,
        },
        "mcp_context": {"server_name": "github-mcp", "server_id": "srv-789", "is_verified": True},
        "data_fields_accessed": [
            {"field": "source_code", "classification": "internal"},
            "email",
        ],
        "preceding_actions": ["mcp:github:repo.read"],
        "parameters": {"title": "Fix authentication bug"},
    }


def add_key(db: psycopg.Connection[Any], customer: str, tier: str = "enterprise") -> str:
    return create_key(db, customer, tier)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m tests.actions_server` on a free port; kill() is SIGKILL (no cleanup at all)."""

    def __init__(self, dsn: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = ROOT / f".pytest-actions-{self.port}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.actions_server",
                "--database-url",
                dsn,
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                httpx.get(self.url + "/scores/event/x", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def scored_by_me(self) -> int:
        """Events this process's workers scored, from its log lines."""
        total = 0
        for line in self.output().splitlines():
            if "scored " in line and " queued events" in line:
                total += int(line.split("scored ")[1].split()[0])
        return total

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()
        self.log.unlink(missing_ok=True)
