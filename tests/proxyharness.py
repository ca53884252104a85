"""Run the real ``mitmdump`` with our addon as a subprocess, in front of the fake provider."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.fakeprovider import FakeProvider, free_port

ROOT = Path(__file__).resolve().parent.parent
MITMDUMP = Path(sys.executable).parent / "mitmdump"


class Proxy:
    def __init__(
        self,
        dsn: str,
        home: Path,
        upstream: FakeProvider,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        listen_host: str = "127.0.0.1",
        *,
        lean: bool = False,
        port: int | None = None,
    ) -> None:
        self.dsn = dsn
        self.listen_host = listen_host
        self.home = home
        #: ``python -m addon.lean`` (what ``up`` runs) instead of ``mitmdump -s addon/main.py``.
        self.lean = lean
        self.port = port if port is not None else free_port()
        self.confdir = home / "mitmproxy"
        self.upstream = upstream
        self.log = home / "mitmdump.log"
        self.extra_env = env or {}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def ssl_context(self) -> ssl.SSLContext:
        """Trust our CA, as an agent's host would."""
        return ssl.create_default_context(cafile=str(self.ca))

    def start(self) -> Proxy:
        env = (
            os.environ
            | {
                "GOVRIX_DATABASE_URL": self.dsn,
                "GOVRIX_HOME": str(self.home),
                "GOVRIX_PROXY_METRICS_PORT": "0",
                "GOVRIX_UPSTREAM_OPENAI": self.upstream.url,
                "GOVRIX_UPSTREAM_ANTHROPIC": self.upstream.url,
                "GOVRIX_UPSTREAM_GEMINI": self.upstream.url,
            }
            | self.extra_env
        )
        entry = (
            [sys.executable, "-m", "addon.lean"]
            if self.lean
            else [str(MITMDUMP), "-s", str(ROOT / "addon" / "main.py")]
        )
        cmd = [
            *entry,
            "--listen-host",
            self.listen_host,
            "--listen-port",
            str(self.port),
            "--set",
            f"confdir={self.confdir}",
            "--set",
            "termlog_verbosity=warn",
            *self.args,
        ]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited: {self.log.read_text()}")
            try:
                with socket.create_connection((self.listen_host, self.port), timeout=0.2):
                    if self.ca.exists() and self.pid_file(env).exists():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()  # never leave a proxy running that no fixture will stop
        raise RuntimeError(f"mitmdump did not listen: {self.log.read_text()}")

    def pid_file(self, env: dict[str, str]) -> Path:
        """Where the addon says it runs (``proxy-N.pid`` for worker N, as addon/config.py)."""
        worker = int(env.get("GOVRIX_PROXY_WORKER") or 1)
        return self.home / ("proxy.pid" if worker == 1 else f"proxy-{worker}.pid")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def wait_for(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``fn`` returns something truthy (events land within ~100 ms of a call)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def events(dsn: str, where: str = "TRUE", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM events WHERE {where} ORDER BY id", params)
        return cur.fetchall()


def wait_events(
    dsn: str, n: int, where: str = "TRUE", params: tuple[Any, ...] = (), timeout: float = 10.0
) -> list[dict[str, Any]]:
    return list(
        wait_for(lambda: rows if len(rows := events(dsn, where, params)) >= n else None, timeout)
    )
