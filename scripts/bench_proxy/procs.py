"""The processes under test: one ``mitmdump`` per proxy (bare, or with the addon and its own
GOVRIX_* environment; or the lean proxy with the exact command line ``scripts/govrix up`` runs),
started, awaited until ready, stopped; and the free ports they listen on."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from scripts import plan

from .client import Target
from .cpu import children, cpu_of, rss_of, tree_rss

ROOT = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).parent / "mitmdump"
#: How the addon is told that the fake upstream is an LLM provider. detect() sees the Host
#: header without its port (mitmproxy's ``pretty_host``), so the key is the bare host; the name
#: "openai" makes the calls priced by genai-prices like real OpenAI traffic.
COMPATIBLE_HOSTS = "127.0.0.1=openai"


class LoggedProcess:
    """Memory and log of a benchmarked process started with its output in ``home / LOG``."""

    LOG: ClassVar[str]
    home: Path
    proc: subprocess.Popen[bytes] | None

    def rss(self) -> int:
        """Resident bytes: the process and its descendants (a recorder, workers)."""
        assert self.proc is not None
        return tree_rss(self.proc.pid)

    def main_rss(self) -> int:
        """Resident bytes of the process alone."""
        assert self.proc is not None
        return rss_of(self.proc.pid)

    def output(self) -> str:
        path = self.home / self.LOG
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@dataclass
class Proxy(LoggedProcess):
    """One ``mitmdump`` subprocess: bare, or with the addon and its own GOVRIX_* environment."""

    LOG: ClassVar[str] = "mitmdump.log"

    name: str
    home: Path
    addon: bool
    dsn: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    lean: bool = False  # the addon in its lean master (python -m addon.lean) instead of mitmdump -s
    stack: bool = (
        False  # the lean proxy with `up`'s own command line (stack_command), nothing added
    )
    port: int = 0  # chosen at start unless set (the workers of one ``Workers`` share theirs)
    worker: int = 1  # which of ``Workers`` this is: its pid file (``plan.worker_name``)
    proc: subprocess.Popen[bytes] | None = None
    sent: int = 0  # every request sent through it, warm-up included: 2 events each for the addon

    @property
    def ca(self) -> Path:
        return self.home / "mitmproxy" / "mitmproxy-ca-cert.pem"

    def command(self) -> list[str]:
        """The options both kinds share; the addon only adds ``-s``.

        ``connection_strategy=lazy`` is what the addon sets for itself at start, so the bare proxy
        gets it too; ``ssl_insecure`` because the fake upstream's certificate is self-signed;
        ``-q`` as scripts/stack.py runs the proxy (no per-flow console output). ``stack``: exactly
        what ``up`` runs instead (``stack_command``), plus ``extra_args``.
        """
        if self.stack:
            return stack_command(self.port, self.home / "mitmproxy") + self.extra_args
        program = [sys.executable, "-m", "addon.lean"] if self.lean else [str(MITMDUMP)]
        cmd = [
            *program, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
            "--set", f"confdir={self.home / 'mitmproxy'}",
            "--set", "connection_strategy=lazy",
            "--set", "ssl_insecure=true",
        ]  # fmt: skip
        cmd += self.extra_args
        if self.lean:
            return cmd
        return cmd + (["-s", str(ROOT / "addon" / "main.py")] if self.addon else [])

    def start(self) -> None:
        self.port = self.port or free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOVRIX_")}
        if self.addon:
            assert self.dsn is not None
            env |= {
                "GOVRIX_DATABASE_URL": self.dsn,
                "GOVRIX_HOME": str(self.home),
                "GOVRIX_PROXY_METRICS_PORT": "0",
                "GOVRIX_OPENAI_COMPATIBLE_HOSTS": COMPATIBLE_HOSTS,
            } | self.env
        with open(self.home / self.LOG, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Ready: the port accepts, the CA exists and (addon) ``$GOVRIX_HOME/proxy.pid`` exists."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: mitmdump exited: {self.output()}")
            pid_file = self.home / f"{plan.worker_name(self.worker)}.pid"
            ready = self.ca.exists() and (not self.addon or pid_file.exists())
            if ready:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: not ready within {timeout}s: {self.output()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the addon drains its writer on the way out
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: this mitmdump, and its children (the recorder process)."""
        assert self.proc is not None
        pid = self.proc.pid
        return cpu_of(pid), sum(cpu_of(c) for c in children(pid))

    def target(self, upstream: Upstream, *, tls: bool) -> Target:
        return Target(
            upstream.https_port if tls else upstream.http_port,
            self.port,
            tls,
            self.ca if tls else None,
        )


@dataclass
class Workers:
    """``n`` Govrix proxies on one port as ``up`` runs them with ``GOVRIX_PROXY_WORKERS=n``
    (``plan.worker_env``: SO_REUSEPORT, each its own pid file and spool, one database): the
    kernel spreads new connections over them. Measured as one proxy: CPU and memory summed."""

    name: str
    home: Path
    dsn: str
    n: int
    members: list[Proxy] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        env = {"GOVRIX_PROXY_METRICS_PORT": "0"}  # scrape ports off, as for every bench proxy
        self.members = [
            Proxy(
                f"{self.name} #{i}", self.home, addon=True, dsn=self.dsn, stack=True, worker=i,
                env=plan.worker_env(i, self.n, env) | env,
            )
            for i in range(1, self.n + 1)
        ]  # fmt: skip

    @property
    def port(self) -> int:
        return self.members[0].port

    def start(self) -> None:
        """The first one alone until it is ready (it writes the CA the others load), then the
        others on its port."""
        first, *rest = self.members
        first.start()
        first.wait_ready()
        for m in rest:
            m.port = first.port
            m.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.wait_ready(timeout)

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: the proxy processes, and their recorders."""
        both = [m.cpu() for m in self.members]
        return sum(p for p, _ in both), sum(r for _, r in both)

    def rss(self) -> int:
        return sum(m.rss() for m in self.members)

    def main_rss(self) -> int:
        return sum(m.main_rss() for m in self.members)

    def target(self, upstream: Upstream, *, tls: bool) -> Target:
        return self.members[0].target(upstream, tls=tls)


@dataclass(frozen=True)
class Upstream:
    http_port: int
    https_port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_command(port: int, confdir: Path) -> list[str]:
    """The proxy command line ``scripts/govrix up`` runs (``scripts/plan.children``, for a
    default environment: one worker per two cores, regular mode, no reverse listeners), moved to
    ``port`` and ``confdir`` so it cannot meet a running stack."""
    args = argparse.Namespace(no_api=True, no_proxy=False, proxy_host="127.0.0.1")
    cmds = [cmd for _, cmd in plan.children(args, env={})]
    cmd = list(cmds[0])  # every worker runs the same command line
    at = cmd.index("--listen-port")
    cmd[at + 1] = str(port)
    (conf,) = [i for i, a in enumerate(cmd) if a.startswith("confdir=")]
    cmd[conf] = f"confdir={confdir}"
    return cmd


class Runs(Protocol):
    """What ``running`` starts and stops: a ``Proxy``, or a peer gateway (peer.py)."""

    def start(self) -> None: ...
    def wait_ready(self, timeout: float = ...) -> None: ...
    def stop(self) -> None: ...


@contextmanager
def running(*procs: Runs) -> Iterator[None]:
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready()
        yield
    finally:
        for p in procs:
            p.stop()
