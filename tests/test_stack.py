"""``scripts/stack.py``: ``up`` refuses busy ports and names their owner, says it is up only once
the API and the proxy answer, and ``down`` stops every process ``up`` started, also after ``up``
itself was SIGKILLed. Real subprocesses, real ports, a temporary ``GOVRIX_HOME``."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from addon import config
from scripts import database, pgembed, pidfiles, plan, stack
from scripts.ports import accepts, http_ok, port_free, port_owner
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
    return port_free("127.0.0.1", port)


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
            rec = pidfiles.Record(**json.loads(path.read_text()))
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
        assert f"pid {os.getpid()} (" in port_owner(port)
        monkeypatch.setattr(os, "readlink", readlink)
        monkeypatch.setattr(os, "geteuid", lambda: 4242)
        text = port_owner(port)
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
    assert http_ok("127.0.0.1", ports[1], "/health")
    assert all(accepts("127.0.0.1", p) for p in (ports[0], ports[2], ports[3]))
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
    assert accepts("127.0.0.1", ports[0])

    again = run("up", env, timeout=30)  # refused, naming what is left and how to stop it
    assert again.returncode != 0 and UP not in again.stdout
    assert f"pid {pids['proxy']} (" in again.stderr and "down" in again.stderr

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
    monkeypatch.setattr(pidfiles, "RUN", tmp_path)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        real = pidfiles.Record.of("api", sleeper.pid, group=True, cmd=["sleep"], ports=[])
        assert real.members() == [sleeper.pid]
        fake = pidfiles.Record(**{**real.__dict__, "start": real.start - 1})
        fake.save()
        assert fake.members() == []
        lines = pidfiles.stop_records([fake])
        assert lines == [f"api: not running (pid {sleeper.pid} is gone; pidfile removed)"]
        assert sleeper.poll() is None  # untouched: no signal was sent
        assert not fake.path.exists()
        assert pidfiles.stop_records([real]) == [f"api: stopped pid {sleeper.pid} (SIGTERM)"]
        assert sleeper.wait(5) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


# -- where the database is: one way for the stack, every operator command and the proxy ---------


def test_default_plan_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without GOVRIX_*_HOST, `up` binds the proxy, its metrics and the API to 127.0.0.1."""
    monkeypatch.delenv("GOVRIX_PROXY_HOST", raising=False)
    monkeypatch.delenv("GOVRIX_API_HOST", raising=False)
    args = stack.parser().parse_args(["up"])
    planned = plan.planned_ports(args, {})
    assert {p.role for p in planned} == {"proxy", "proxy metrics", "api"}
    assert {p.host for p in planned} == {"127.0.0.1"}
    cmds = dict(plan.children(args))
    proxy_cmd = cmds["proxy"]
    assert proxy_cmd[proxy_cmd.index("--listen-host") + 1] == "127.0.0.1"
    assert cmds["api"][cmds["api"].index("--host") + 1] == "127.0.0.1"


@pytest.mark.parametrize(
    ("user", "reachable", "where"),
    [
        (None, False, "state"),  # not root: the server runs as us, beside the tools' files
        ("postgres", True, "state"),  # root, checkout reachable by the server's user
        ("postgres", False, "system"),  # root, checkout in a private (0700) directory
    ],
)
def test_cluster_location(tmp_path: Path, user: str | None, reachable: bool, where: str) -> None:
    c = pgembed.Cluster(tmp_path / "checkout" / ".govrix")
    base = pgembed.choose_base(c, user, lambda path, who: reachable)
    if where == "state":
        assert base == c.state == c.home / "pg"
    else:
        assert base.parent == pgembed.SYSTEM_ROOT
        assert base == pgembed.system_base(c.home)  # stable: the same checkout, the same folder
        assert base != pgembed.system_base(tmp_path / "other" / ".govrix")


def test_pointer_file_ties_the_cluster_to_its_checkout(tmp_path: Path) -> None:
    c = pgembed.Cluster(tmp_path / ".govrix")
    assert c.data == c.home / "pg" / "data"
    c.state.mkdir(parents=True)
    c.location_file.write_text("/var/lib/govrix/0123456789abcdef\n")
    assert c.data == Path("/var/lib/govrix/0123456789abcdef/data")
    assert c.log.parent == c.base == Path("/var/lib/govrix/0123456789abcdef")
    # What the tools read stays in the checkout.
    assert {c.password_file.parent, c.port_file.parent, c.url_file.parent} == {c.state}


def test_addon_reads_the_embedded_url_file_by_default(tmp_path: Path) -> None:
    home = tmp_path / ".govrix"
    c = pgembed.Cluster(home)
    assert c.url_file == home / config.EMBEDDED_URL_FILE  # the two sides agree on the place
    env = {"GOVRIX_HOME": str(home)}
    assert config.load(env).database_url is None  # no cluster: no database (spool only)
    c.state.mkdir(parents=True)
    c.url_file.write_text("postgresql://govrix:pw@127.0.0.1:54329/govrix\n")
    assert config.load(env).database_url == "postgresql://govrix:pw@127.0.0.1:54329/govrix"
    other = tmp_path / "url"
    other.write_text("postgresql://elsewhere/db\n")
    assert config.load(env | {"GOVRIX_DATABASE_URL_FILE": str(other)}).database_url == (
        "postgresql://elsewhere/db"
    )
    explicit = env | {"GOVRIX_DATABASE_URL": "postgresql://explicit/db"}
    assert config.load(explicit).database_url == "postgresql://explicit/db"
    with pytest.raises(
        config.ConfigError, match=r"GOVRIX_DATABASE_URL_FILE: .*nope does not exist"
    ):
        config.load(env | {"GOVRIX_DATABASE_URL_FILE": str(tmp_path / "nope")})


def test_runtime_code_imports_no_operator_script() -> None:
    """addon/ and api/ run in the proxy and the API: the cluster's place reaches them as
    configuration, never by importing scripts/."""
    offenders = []
    for path in [*ROOT.glob("addon/**/*.py"), *ROOT.glob("api/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] == "scripts" for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_explicit_url_wins_and_is_never_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_embedded(*_: object, **__: object) -> None:
        raise AssertionError("the embedded cluster was started")

    monkeypatch.setattr(pgembed, "start", no_embedded)
    assert database.locate("postgresql://a/b", {"GOVRIX_DATABASE_URL": "postgresql://c/d"}).url == (
        "postgresql://a/b"
    )
    got = database.locate(None, {"GOVRIX_DATABASE_URL": "postgresql://c/d"})
    assert got == database.Database("postgresql://c/d", embedded=False)
    assert database.redact("postgresql://u:secret@h:1/d") == "postgresql://u:***@h:1/d"


def _cli(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(300)
def test_operator_commands_find_a_private_checkouts_cluster(tmp_path: Path) -> None:
    """A checkout the server's user cannot reach (as root: pytest's 0700 tmp folder, like a clone
    in root's home): the cluster goes to a system folder tied to the checkout by a pointer file,
    and `pgembed`, `migrate`, `apikey` and the addon's configuration all find it there, with no
    GOVRIX_DATABASE_URL anywhere."""
    private = tmp_path / "priv"
    private.mkdir(mode=0o700)
    home = private / "checkout" / ".govrix"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVRIX_")}
    env["GOVRIX_HOME"] = str(home)
    c = pgembed.Cluster(home)
    try:
        started = _cli("scripts.pgembed", "start", env=env)
        assert started.returncode == 0, started.stderr
        if os.geteuid() == 0:
            assert c.location_file.read_text().strip() == str(pgembed.system_base(home))
            assert c.base.stat().st_uid != 0 and c.base.stat().st_mode & 0o777 == 0o700
        else:
            assert not c.location_file.exists() and c.base == home / "pg"
        assert started.stdout.startswith(f"running on 127.0.0.1:{c.port()} (data {c.data})")
        assert c.password_file.stat().st_mode & 0o777 == 0o600
        assert c.url_file.stat().st_mode & 0o777 == 0o600

        url = _cli("scripts.pgembed", "url", env=env)
        assert url.stdout.strip() == c.url() == config.load(env).database_url

        migrated = _cli("scripts.migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("migrations applied: 001_events.sql")
        key = _cli("scripts.apikey", "create", "--customer", "acme", "--tier", "pro", env=env)
        assert key.returncode == 0, key.stderr
        assert key.stdout.startswith("sk-pro-")
        listed = _cli("scripts.apikey", "list", env=env)
        assert listed.returncode == 0 and "  acme  pro  " in listed.stdout, listed.stderr
        assert _cli("scripts.migrate", env=env).stdout == "migrations applied: none (up to date)\n"

        stopped = _cli("scripts.pgembed", "stop", env=env)
        assert stopped.stdout.strip() == f"stopped (data {c.data})"
    finally:
        pgembed.stop(c, mode="immediate")
        if c.base != c.state:
            shutil.rmtree(c.base, ignore_errors=True)


def test_the_metrics_endpoint_listens_where_it_is_told(tmp_path: Path) -> None:
    import socket
    import urllib.request

    from addon import metrics
    from scripts.bench_proxy import free_port

    env = {"GOVRIX_HOME": str(tmp_path)}
    assert config.load(env).metrics_host == "127.0.0.1"  # loopback unless asked
    host = config.load(env | {"GOVRIX_PROXY_METRICS_HOST": "127.0.0.2"}).metrics_host
    port = free_port()
    metrics.serve(port, host)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert b"# HELP" in response.read()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # not on the default address as well
