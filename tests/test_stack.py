"""``scripts/stack.py``: ``up`` refuses busy ports and names their owner, says it is up only once
the API and the proxy answer, and ``down`` stops every process ``up`` started, also after ``up``
itself was SIGKILLed. Real subprocesses, real ports, a temporary ``GOVRIX_HOME``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import stack
from tests.proxyharness import wait_for

ROOT = Path(__file__).resolve().parent.parent
UP = "Govrix Scout is up."


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 (held together while chosen, so no duplicates)."""
    with contextlib.ExitStack() as stack_:
        socks = [stack_.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@contextlib.contextmanager
def listener() -> Iterator[socket.socket]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def stack_env(
    home: Path, ports: list[int], dsn: str = "postgresql://nobody@127.0.0.1:1/none"
) -> dict[str, str]:
    proxy, api, metrics, reverse = ports
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVRIX_")}
    return env | {
        "GOVRIX_HOME": str(home),
        "GOVRIX_DATABASE_URL": dsn,
        "GOVRIX_API_KEY": "stack-test-key",
        "GOVRIX_PROXY_PORT": str(proxy),
        "GOVRIX_API_PORT": str(api),
        "GOVRIX_PROXY_METRICS_PORT": str(metrics),
        "GOVRIX_REVERSE": f"openai={reverse}",
        "GOVRIX_UP_TIMEOUT": "40",
    }


def run(cmd: str, env: dict[str, str], timeout: float = 45) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.stack", cmd],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def gone(pid: int) -> bool:
    """Not running: no /proc entry, or a zombie nobody reaped yet (orphans' reaper may be lazy)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def group_of(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (d / "stat").read_text()
                rest = stat[stat.rindex(")") + 2 :].split()
                if int(rest[2]) == pgid and rest[0] not in "ZX":
                    out.append(int(d.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def bindable(port: int) -> bool:
    return stack.port_free("127.0.0.1", port)


class Up:
    """``python -m scripts.stack up`` in the background, its output in a file."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "up.log"
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scripts.stack", "up"],
                cwd=ROOT,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        self.home = home

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, timeout: float = 45) -> None:
        wait_for(lambda: UP in self.output() or self.proc.poll() is not None, timeout, 0.1)
        assert UP in self.output(), self.output()

    def pids(self) -> dict[str, int]:
        return {
            p.stem: json.loads(p.read_text())["pid"] for p in (self.home / "run").glob("*.json")
        }

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Whatever a failed test left running is stopped (process groups of recorded pids)."""
    ups: list[Up] = []
    yield ups
    for u in ups:
        u.kill()
        for path in (u.home / "run").glob("*.json"):
            rec = stack.Record(**json.loads(path.read_text()))
            for pid in rec.members():  # only the processes we started, never a recycled pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def test_busy_port_is_refused_and_its_owner_named(tmp_path: Path) -> None:
    ports = free_ports(4)
    with listener() as held:
        ports[0] = held.getsockname()[1]
        r = run("up", stack_env(tmp_path / "home", ports), timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"port {ports[0]} (proxy" in out
    assert f"pid {os.getpid()} (" in out  # this test process holds it
    assert "GOVRIX_PROXY_PORT" in out
    assert UP not in out and "database ready" not in out  # refused before starting anything
    assert not list((tmp_path / "home").glob("run/*.json"))


def test_every_configured_port_is_checked(tmp_path: Path) -> None:
    ports = free_ports(4)
    with listener() as a, listener() as b:
        ports[2], ports[3] = a.getsockname()[1], b.getsockname()[1]
        r = run("up", stack_env(tmp_path / "home", ports), timeout=30)
    out = r.stderr
    assert r.returncode != 0
    assert f"port {ports[2]} (proxy metrics" in out and "GOVRIX_PROXY_METRICS_PORT" in out
    assert f"port {ports[3]} (reverse proxy to https://api.openai.com" in out
    assert f"port {ports[0]} " not in out and f"port {ports[1]} " not in out


def test_same_port_twice_is_refused(tmp_path: Path) -> None:
    ports = free_ports(4)
    ports[1] = ports[0]
    r = run("up", stack_env(tmp_path / "home", ports), timeout=30)
    assert r.returncode != 0
    assert f"port {ports[0]} is configured for both the proxy and the api" in r.stderr


def test_owner_of_another_user_is_named_by_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """As non-root, other users' /proc/<pid>/fd are unreadable: the uid of the socket says who."""
    real_readlink = os.readlink

    def readlink(path: Any, *a: Any, **kw: Any) -> str:
        if "/fd/" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return str(real_readlink(path, *a, **kw))

    with listener() as held:
        port = held.getsockname()[1]
        assert f"pid {os.getpid()} (" in stack.port_owner(port)
        monkeypatch.setattr(os, "readlink", readlink)
        monkeypatch.setattr(os, "geteuid", lambda: 4242)
        text = stack.port_owner(port)
    assert "another user's process" in text and f"uid {os.getuid()}" in text
    assert "pid" not in text


@pytest.mark.e2e
def test_up_answers_then_down_stops_everything(dsn: str, tmp_path: Path, cleanup: list[Up]) -> None:
    home = tmp_path / "home"
    ports = free_ports(4)
    env = stack_env(home, ports, dsn)
    u = Up(env, home)
    cleanup.append(u)
    u.wait_up()
    # "up" means answering: the API's /health and every proxy listener, right now.
    assert stack.http_ok("127.0.0.1", ports[1], "/health")
    assert all(stack.accepts("127.0.0.1", p) for p in (ports[0], ports[2], ports[3]))
    pids = u.pids()
    assert set(pids) == {"up", "api", "proxy"} and pids["up"] == u.proc.pid
    proxy_group = group_of(pids["proxy"])
    recorders = [p for p in proxy_group if "addon.recorder" in cmdline(p)]
    assert recorders, proxy_group  # mitmdump's recorder child is in mitmdump's process group
    started = {u.proc.pid, pids["api"], *proxy_group}

    st = run("status", env)
    assert f"api: running, pid {pids['api']}" in st.stdout, st.stdout
    assert f"proxy: running, pid {pids['proxy']}" in st.stdout
    assert f"pid {recorders[0]} " in st.stdout

    d = run("down", env)
    assert d.returncode == 0, d.stdout + d.stderr
    assert u.proc.wait(10) == 0, u.output()  # up stopped its children and exited cleanly
    assert "api: stopped" in d.stdout and "proxy: stopped" in d.stdout
    assert "embedded PostgreSQL: left alone" in d.stdout  # GOVRIX_DATABASE_URL: not ours
    wait_for(lambda: all(gone(p) for p in started), 10)
    assert all(bindable(p) for p in ports)
    assert not list(home.glob("run/*.json"))
    assert "not running" in run("status", env).stdout


@pytest.mark.e2e
def test_down_after_up_was_sigkilled(dsn: str, tmp_path: Path, cleanup: list[Up]) -> None:
    home = tmp_path / "home"
    ports = free_ports(4)
    env = stack_env(home, ports, dsn)
    u = Up(env, home)
    cleanup.append(u)
    u.wait_up()
    pids = u.pids()
    orphans = {pids["api"], *group_of(pids["proxy"])}
    u.kill()  # SIGKILL: nothing of up's own clean-up runs; its children keep serving
    assert not any(gone(p) for p in orphans)
    assert stack.accepts("127.0.0.1", ports[0])

    again = run("up", env, timeout=30)  # refused, naming what is left and how to stop it
    assert again.returncode != 0 and UP not in again.stdout
    assert f"pid {pids['proxy']} (mitmdump" in again.stderr and "down" in again.stderr

    d = run("down", env)
    assert d.returncode == 0, d.stdout + d.stderr
    assert "up: not running" in d.stdout
    assert f"proxy: stopped pid {pids['proxy']} and" in d.stdout  # with its recorder
    wait_for(lambda: all(gone(p) for p in orphans), 10)
    assert all(bindable(p) for p in ports)
    assert not list(home.glob("run/*.json"))
    assert not (home / "proxy.pid").exists()


def test_a_recycled_pid_is_not_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pidfile whose pid now runs something else (another start time) stops nothing."""
    monkeypatch.setattr(stack, "RUN", tmp_path)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        real = stack.Record.of("api", sleeper.pid, group=True, cmd=["sleep"], ports=[])
        assert real.members() == [sleeper.pid]
        fake = stack.Record(**{**real.__dict__, "start": real.start - 1})
        fake.save()
        assert fake.members() == []
        lines = stack.stop_records([fake])
        assert lines == [f"api: not running (pid {sleeper.pid} is gone; pidfile removed)"]
        assert sleeper.poll() is None  # untouched: no signal was sent
        assert not fake.path.exists()
        assert stack.stop_records([real]) == [f"api: stopped pid {sleeper.pid} (SIGTERM)"]
        assert sleeper.wait(5) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()
