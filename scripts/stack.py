"""Run the whole stack in the foreground: PostgreSQL, migrations, the API and the proxy.

    python -m scripts.stack up [--no-api] [--no-proxy]   (Ctrl-C, or `down` elsewhere, stops it)
    python -m scripts.stack down | status

With ``GOVRIX_DATABASE_URL`` unset the embedded cluster under ``.govrix/`` is used (DESIGN.md §2).
With ``GOVRIX_API_KEY`` unset a key is generated once into ``.govrix/api_key`` (mode 600).

``up`` first checks that every port it will listen on is free (proxy, API, the proxy's metrics,
the ``GOVRIX_REVERSE`` listeners) and names the process holding a busy one; it starts the API and
mitmdump each in its own process group (the recorder process is mitmdump's child, so it is in
mitmdump's group) and records one pidfile per process under ``$GOVRIX_HOME/run/``: the pid, its
start time (``/proc/<pid>/stat``) and the boot id, so a recycled pid is never taken for ours. It
says "Govrix Scout is up." only once the API answers ``/health`` and the proxy accepts connections
on every port and has written ``proxy.pid``. ``down`` asks the ``up`` process to stop what it
started and then stops, from the pidfiles, whatever is left (also after ``up`` was SIGKILLed):
SIGTERM to the group leader, then SIGTERM to the group, then SIGKILL, each after a bounded wait;
then the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts import migrate, pgembed

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("GOVRIX_HOME") or ROOT / ".govrix").absolute()
RUN = HOME / "run"
PROC = Path("/proc")
PROXY_PORT = int(os.environ.get("GOVRIX_PROXY_PORT", "4000"))
API_PORT = int(os.environ.get("GOVRIX_API_PORT", "4001"))
DEFAULT_METRICS_PORT = 4002

#: How long ``up`` waits for the API and the proxy to answer (GOVRIX_UP_TIMEOUT, seconds).
UP_TIMEOUT = float(os.environ.get("GOVRIX_UP_TIMEOUT", "60"))
#: Stopping a process group: SIGTERM to its leader, then to the group, then SIGKILL; seconds
#: each. The leader's share is the longest: mitmdump hands its recorder child what it still holds
#: and waits for it to drain before it exits.
LEADER_GRACE = 20.0
GROUP_GRACE = 5.0
KILL_GRACE = 5.0
SUPERVISOR = "up"
COMPONENTS = ("api", "proxy")


def database_url() -> str:
    url = os.environ.get("GOVRIX_DATABASE_URL")
    if url:
        return url
    c = pgembed.start()
    pgembed.ensure_database(c)
    return c.url()


def api_key() -> str:
    key = os.environ.get("GOVRIX_API_KEY")
    if key:
        return key
    path = HOME / "api_key"
    if not path.exists():
        HOME.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


REVERSE_BASES = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai",
    "groq": "https://api.groq.com",
    "deepseek": "https://api.deepseek.com",
    "openrouter": "https://openrouter.ai",
    "xai": "https://api.x.ai",
}


def _reverse(env: Mapping[str, str]) -> list[tuple[str, int]]:
    """``GOVRIX_REVERSE`` as (base URL, port) pairs."""
    out: list[tuple[str, int]] = []
    for item in filter(None, (env.get("GOVRIX_REVERSE") or "").split(",")):
        target, _, port = item.strip().rpartition("=")
        base = REVERSE_BASES.get(target, target)
        if not base.startswith(("http://", "https://")) or not port.isdigit():
            raise SystemExit(
                f"GOVRIX_REVERSE: cannot read {item!r} (want provider=port or https://host=port)"
            )
        out.append((base, int(port)))
    return out


def proxy_modes(env: Mapping[str, str] = os.environ) -> list[str]:
    """mitmproxy ``--mode`` arguments: explicit (or transparent) on the main port, plus one
    reverse listener per entry of ``GOVRIX_REVERSE`` ("openai=4010,anthropic=4011", or
    "https://my-gateway.internal=4012")."""
    main = env.get("GOVRIX_PROXY_MODE", "regular")
    if main not in ("regular", "transparent"):
        raise SystemExit(f"GOVRIX_PROXY_MODE: expected regular|transparent, got {main!r}")
    modes = ["--mode", main]
    for base, port in _reverse(env):
        modes += ["--mode", f"reverse:{base}@{port}"]
    return modes


def metrics_port(env: Mapping[str, str] = os.environ) -> int:
    """The proxy's metrics port as the addon reads it: the environment, then GOVRIX_CONFIG."""
    raw = env.get("GOVRIX_PROXY_METRICS_PORT")
    if raw:
        with contextlib.suppress(ValueError):
            return int(float(raw))
    path = env.get("GOVRIX_CONFIG")
    if path:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, TypeError, ValueError):
            return int(
                tomllib.loads(Path(path).read_text()).get("metrics_port", DEFAULT_METRICS_PORT)
            )
    return DEFAULT_METRICS_PORT


# -- ports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """One port ``up`` listens on, who listens there, and the setting that moves it."""

    role: str
    host: str
    port: int
    setting: str


def planned_ports(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> list[Port]:
    out: list[Port] = []
    if not args.no_proxy:
        out.append(Port("proxy", args.proxy_host, PROXY_PORT, "GOVRIX_PROXY_PORT"))
        out += [
            Port(f"reverse proxy to {base}", args.proxy_host, port, "GOVRIX_REVERSE")
            for base, port in _reverse(env)
        ]
        if mp := metrics_port(env):
            out.append(Port("proxy metrics", "127.0.0.1", mp, "GOVRIX_PROXY_METRICS_PORT"))
    if not args.no_api:
        out.append(Port("api", args.api_host, API_PORT, "GOVRIX_API_PORT"))
    return out


def port_free(host: str, port: int) -> bool:
    """True when we could listen on ``host:port`` (SO_REUSEADDR, as mitmproxy and uvicorn do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Socket:
    inode: int
    uid: int
    listening: bool


def _sockets_on(port: int, proc: Path = PROC) -> list[Socket]:
    """TCP sockets whose local port is ``port``, listeners first (/proc/net/tcp and tcp6)."""
    out: list[Socket] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            try:
                local_port = int(f[1].rsplit(":", 1)[1], 16)
                inode, uid = int(f[9]), int(f[7])
            except (IndexError, ValueError):
                continue
            if local_port == port and inode != 0:
                out.append(Socket(inode, uid, f[3] == "0A"))
    return sorted(out, key=lambda s: not s.listening)


def _holders(inodes: set[int], proc: Path = PROC) -> dict[int, list[int]]:
    """pids of the processes holding each socket inode (other users' fds are unreadable to a
    non-root user: those processes are simply not found)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, list[int]] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fds = list((d / "fd").iterdir())
        except OSError:
            continue  # not ours to read, or gone meanwhile
        for fd in fds:
            try:
                target = os.readlink(fd)
            except PermissionError:
                break
            except OSError:
                continue
            if target in wanted:
                pids = found.setdefault(wanted[target], [])
                if int(d.name) not in pids:
                    pids.append(int(d.name))
    return found


def describe_pid(pid: int, proc: Path = PROC) -> str:
    """``pid 123 (mitmdump: /usr/bin/python3 .venv/bin/mitmdump -q ...)``."""
    try:
        comm = (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return f"pid {pid}"
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        cmd = " ".join(" ".join(a.decode(errors="replace").split()) for a in argv if a)
    except OSError:
        cmd = ""
    if len(cmd) > 120:
        cmd = cmd[:117] + "..."
    return f"pid {pid} ({comm}: {cmd})" if cmd else f"pid {pid} ({comm})"


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def port_owner(port: int, proc: Path = PROC) -> str:
    """Who holds ``port``, in words: pids and names, or the owning user when we cannot look."""
    socks = _sockets_on(port, proc)
    if not socks:
        return (
            "in use, but no TCP socket on it is visible in /proc/net/tcp (another network "
            "namespace, or a socket that is bound without listening)"
        )
    found = _holders({s.inode for s in socks}, proc)
    for listening in (True, False):
        pids = sorted(
            {p for s in socks if s.listening == listening for p in found.get(s.inode, [])}
        )
        if pids:
            return "in use by " + ", ".join(describe_pid(p, proc) for p in pids)
    s = socks[0]
    me = os.geteuid()
    if me != 0 and s.uid != me:
        return f"in use by another user's process ({_user(s.uid)}); this user cannot see which one"
    return (
        f"in use by a process of {_user(s.uid)} that could not be identified "
        f"(socket inode {s.inode}; another PID namespace?)"
    )


def busy_ports(ports: Iterable[Port], proc: Path = PROC) -> list[str]:
    """One sentence per port that is configured twice or that we could not listen on."""
    problems: list[str] = []
    seen: dict[int, Port] = {}
    for p in ports:
        if p.port in seen:
            problems.append(
                f"port {p.port} is configured for both the {seen[p.port].role} and the {p.role} "
                f"(change {p.setting})"
            )
            continue
        seen[p.port] = p
        if not port_free(p.host, p.port):
            problems.append(
                f"port {p.port} ({p.role}, {p.host}) is {port_owner(p.port, proc)}; "
                f"stop it or choose another port ({p.setting})"
            )
    return problems


# -- processes we started ---------------------------------------------------------------------


def boot_id() -> str:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Stat:
    state: str
    ppid: int
    pgrp: int
    start: int  # clock ticks after boot
    uid: int


def proc_stat(pid: int, proc: Path = PROC) -> Stat | None:
    """What /proc says about ``pid``; None when it is gone or a zombie (it cannot be stopped)."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
        uid = (proc / str(pid)).stat().st_uid
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()  # comm may hold spaces and parentheses
    if rest[0] in ("Z", "X"):
        return None
    return Stat(state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]), start=int(rest[19]), uid=uid)


@dataclass(frozen=True)
class Record:
    """A process ``up`` started, as written to ``$GOVRIX_HOME/run/<name>.json``."""

    name: str
    pid: int
    start: int
    boot: str
    uid: int
    group: bool  # the process leads its own process group (pgid == pid)
    cmd: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, pid: int, *, group: bool, cmd: list[str], ports: list[int]) -> Record:
        st = proc_stat(pid)
        if st is None:
            raise ProcessLookupError(pid)
        return cls(name, pid, st.start, boot_id(), st.uid, group, cmd, ports)

    @property
    def path(self) -> Path:
        return RUN / f"{self.name}.json"

    def save(self) -> None:
        RUN.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)) + "\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def leader_alive(self) -> bool:
        """The recorded pid still runs and is the very process we started (same boot, start)."""
        st = proc_stat(self.pid)
        return st is not None and self._ours(st) and st.start == self.start

    def _ours(self, st: Stat) -> bool:
        return self.boot == boot_id() and st.uid == self.uid and st.start >= self.start

    def members(self, proc: Path = PROC) -> list[int]:
        """Live processes of what we started: the leader and, for a group, everything in it.

        A pid is not handed out again while it still names a process group with members, so
        processes in group ``pid`` that started after our leader are ours even once the leader is
        gone (a recorder outliving mitmdump). A leader pid that now runs another program (another
        start time) means our group emptied long ago: nothing is ours.
        """
        st = proc_stat(self.pid, proc)
        if st is not None and st.start != self.start:
            return []
        if not self.group:
            return [self.pid] if self.leader_alive() else []
        out: list[int] = []
        for d in proc.iterdir():
            s = proc_stat(int(d.name), proc) if d.name.isdigit() else None
            if s is not None and s.pgrp == self.pid and self._ours(s):
                out.append(int(d.name))
        return sorted(out)


def load_record(name: str) -> Record | None:
    path = RUN / f"{name}.json"
    try:
        data = json.loads(path.read_text())
        return Record(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        print(f"govrix: ignoring unreadable {path}", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def records() -> list[Record]:
    return [r for n in (SUPERVISOR, *COMPONENTS) if (r := load_record(n)) is not None]


def wait_until(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _signal(rec: Record, sig: int, *, group: bool) -> str | None:
    """Send ``sig``; an error message when we may not."""
    try:
        if group:
            os.killpg(rec.pid, sig)
        else:
            os.kill(rec.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        return f"{rec.name}: not allowed to signal pid {rec.pid} (started by another user?)"
    return None


def stop_records(recs: list[Record], *, leader_grace: float = LEADER_GRACE) -> list[str]:
    """Stop every process of ``recs``: SIGTERM to each leader, wait; SIGTERM to what is left of
    each group, wait; SIGKILL, wait. Returns one line per record saying what happened."""
    before = {r.name: r.members() for r in recs}
    errors: dict[str, str] = {}
    how: dict[str, str] = {}
    pending = [r for r in recs if before[r.name]]

    def left() -> list[Record]:
        return [r for r in pending if r.members()]

    phases: list[tuple[str, int, bool, float]] = [
        ("SIGTERM", signal.SIGTERM, False, leader_grace),
        ("SIGTERM to its process group", signal.SIGTERM, True, GROUP_GRACE),
        ("SIGKILL", signal.SIGKILL, True, KILL_GRACE),
    ]
    for label, sig, to_group, grace in phases:
        todo = left()
        if not todo:
            break
        for r in todo:
            if not to_group and not r.leader_alive():
                continue  # the leader is gone; its group gets the next phase
            if err := _signal(r, sig, group=to_group and r.group):
                errors[r.name] = err
            how[r.name] = label
        wait_until(lambda: not left(), grace)
    out: list[str] = []
    for r in recs:
        pids = before[r.name]
        still = r.members()
        if not pids:
            out.append(f"{r.name}: not running (pid {r.pid} is gone; pidfile removed)")
            r.remove()
        elif still:
            out.append(errors.get(r.name) or f"{r.name}: pids {still} would not stop")
        else:
            extra = f" and {len(pids) - 1} more of its group" if len(pids) > 1 else ""
            out.append(f"{r.name}: stopped pid {r.pid}{extra} ({how.get(r.name, 'exited')})")
            r.remove()
    return out


# -- up ---------------------------------------------------------------------------------------


def _children(url: str, key: str, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    env_py = sys.executable
    out: list[tuple[str, list[str]]] = []
    if not args.no_api:
        out.append(("api", [env_py, "-m", "api", "--host", args.api_host, "--port", str(API_PORT)]))
    if not args.no_proxy:
        mitmdump = str(Path(env_py).parent / "mitmdump")
        out.append(
            (
                "proxy",
                [
                    mitmdump,
                    "-q",
                    *proxy_modes(),
                    "--listen-host",
                    args.proxy_host,
                    "--listen-port",
                    str(PROXY_PORT),
                    "--set",
                    f"confdir={HOME / 'mitmproxy'}",
                    "-s",
                    str(ROOT / "addon" / "main.py"),
                ],
            )
        )
    return out


def _dial_host(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_dial_host(host), port), timeout=1.0):
            return True
    except OSError:
        return False


def http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(_dial_host(host), port, timeout=2.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _ready(name: str, proc: subprocess.Popen[bytes], ports: list[Port]) -> bool:
    """The API answers /health; the proxy's addon runs (proxy.pid names our mitmdump) and every
    listener accepts connections."""
    if name == "api":
        return http_ok(ports[0].host, ports[0].port, "/health")
    try:
        pid = int((HOME / "proxy.pid").read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    return pid == proc.pid and all(
        accepts(p.host, p.port) for p in ports if p.role != "proxy metrics"
    )


def _leftovers() -> tuple[list[str], list[Record]]:
    """Processes a previous ``up`` left running (described), and the stale records."""
    alive: list[str] = []
    stale: list[Record] = []
    for r in records():
        if pids := r.members():
            alive.append(f"{r.name}: {', '.join(describe_pid(p) for p in pids)}")
        else:
            stale.append(r)
    return alive, stale


def up(args: argparse.Namespace) -> int:
    alive, stale = _leftovers()
    if alive:
        print(
            "govrix: a previous `up` is still running: "
            + "; ".join(alive)
            + ". Stop it with `scripts/govrix down` first.",
            file=sys.stderr,
        )
        return 1
    for r in stale:
        r.remove()
    ports = planned_ports(args)
    if problems := busy_ports(ports):
        for line in problems:
            print(f"govrix: {line}", file=sys.stderr)
        print("govrix: nothing was started.", file=sys.stderr)
        return 1

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    me = Record.of(SUPERVISOR, os.getpid(), group=False, cmd=sys.argv, ports=[])
    me.save()
    started: list[tuple[str, subprocess.Popen[bytes], Record]] = []
    try:
        return _run(args, ports, started, lambda: stopping)
    finally:
        for line in stop_records([r for _, _, r in started]):
            print(f"govrix: {line}", file=sys.stderr)
        for _, p, _ in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(1)  # reap
        me.remove()


def _run(
    args: argparse.Namespace,
    ports: list[Port],
    started: list[tuple[str, subprocess.Popen[bytes], Record]],
    stopping: Callable[[], bool],
) -> int:
    try:
        url = database_url()
    except pgembed.EmbeddedError as e:
        print(f"govrix: cannot start PostgreSQL: {e}", file=sys.stderr)
        return 1
    applied = migrate.apply(url)
    print(
        f"govrix: database ready ({'migrations applied: ' + ', '.join(applied) if applied else 'schema up to date'})",
        flush=True,
    )
    key = api_key()
    env = os.environ | {"GOVRIX_DATABASE_URL": url, "GOVRIX_API_KEY": key, "GOVRIX_HOME": str(HOME)}
    by_name = {
        "api": [p for p in ports if p.role == "api"],
        "proxy": [p for p in ports if p.role != "api"],
    }
    for name, cmd in _children(url, key, args):
        if stopping():
            return 130
        # Its own process group (and session): `down` can stop it, and everything it forks,
        # from any terminal; a Ctrl-C here reaches only us, and we stop it in order.
        p = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            rec = Record.of(name, p.pid, group=True, cmd=cmd, ports=[x.port for x in by_name[name]])
        except ProcessLookupError:
            print(f"govrix: {name} exited at once with status {p.wait()}", file=sys.stderr)
            return 1
        rec.save()
        started.append((name, p, rec))

    waiting = {name: p for name, p, _ in started}
    failed: list[str] = []

    def settled() -> bool:
        for name, p in list(waiting.items()):
            if p.poll() is not None:
                failed.append(f"{name} exited with status {p.returncode} before it answered")
            elif not _ready(name, p, by_name[name]):
                continue
            del waiting[name]
        return not waiting or bool(failed) or stopping()

    wait_until(settled, UP_TIMEOUT, interval=0.1)
    if stopping():
        return 130
    if failed or waiting:
        for line in failed:
            print(f"govrix: {line}; stopping the stack", file=sys.stderr)
        for name in waiting if not failed else ():
            what = ", ".join(f"{p.host}:{p.port}" for p in by_name[name])
            print(
                f"govrix: {name} did not answer on {what} within {UP_TIMEOUT:g}s; stopping the stack",
                file=sys.stderr,
            )
        return 1

    _banner(key_from_env=bool(os.environ.get("GOVRIX_API_KEY")), ports=ports)
    code = 0
    while not stopping():
        for name, p, _ in started:
            rc = p.poll()
            if rc is not None:
                print(
                    f"govrix: {name} exited with status {rc}; stopping the stack", file=sys.stderr
                )
                return rc or 1
        time.sleep(0.2)
    return code


def _banner(*, key_from_env: bool, ports: list[Port]) -> None:
    ca = HOME / "mitmproxy" / "mitmproxy-ca-cert.pem"
    key_hint = "$GOVRIX_API_KEY" if key_from_env else f"$(cat {HOME / 'api_key'})"
    lines = ["", "Govrix Scout is up."]
    order = {"proxy": 0, "api": 1}
    for p in sorted(ports, key=lambda p: order.get(p.role, 2)):
        if p.role == "proxy":
            lines.append(f"  proxy : http://127.0.0.1:{PROXY_PORT}   (CA certificate: {ca})")
        elif p.role == "api":
            lines.append(f"  api   : http://127.0.0.1:{API_PORT}     (key in {HOME / 'api_key'})")
        elif p.role == "proxy metrics":
            lines.append(f"  metrics: http://127.0.0.1:{p.port}/metrics")
        else:
            lines.append(f"  {p.role}: http://127.0.0.1:{p.port}")
    lines.append(f"  stop  : scripts/govrix down   (pidfiles in {RUN})")
    if any(p.role == "proxy" for p in ports):
        lines += [
            "",
            "Point an agent at it:",
            f"  export HTTPS_PROXY=http://my-agent:x@127.0.0.1:{PROXY_PORT}",
            f"  export SSL_CERT_FILE={ca}  REQUESTS_CA_BUNDLE={ca}  NODE_EXTRA_CA_CERTS={ca}",
            "",
            "Try it:",
            f"  curl --proxy http://my-agent:x@127.0.0.1:{PROXY_PORT} --cacert {ca} \\",
            '       https://api.openai.com/v1/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" \\',
            '       -H \'Content-Type: application/json\' -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}\'',
        ]
    if any(p.role == "api" for p in ports):
        lines.append(
            f'  curl -H "Authorization: Bearer {key_hint}" http://127.0.0.1:{API_PORT}/api/v1/events'
        )
    print("\n".join([*lines, ""]), flush=True)


# -- down, status -----------------------------------------------------------------------------


def down() -> int:
    recs = {r.name: r for r in records()}
    sup = recs.pop(SUPERVISOR, None)
    lines: list[str] = []
    if sup is not None:
        running = {r.name: r.members() for r in recs.values()}
        # `up` stops its children in order and removes their pidfiles; we wait for that (when it
        # is gone or stuck, the pidfiles are still there and we stop its children below).
        budget = LEADER_GRACE + GROUP_GRACE + KILL_GRACE + 5
        lines += stop_records([sup], leader_grace=budget)
        for r in recs.values():
            if running[r.name] and not r.path.exists() and not r.members():
                lines.append(f"{r.name}: stopped pid {r.pid} (by `up`)")
    lines += stop_records([r for r in recs.values() if r.path.exists()])
    for line in lines:
        print(line)
    proxy_pid = HOME / "proxy.pid"
    with contextlib.suppress(OSError, ValueError):
        if proc_stat(int(proxy_pid.read_text().strip())) is None:
            proxy_pid.unlink()  # written by a mitmdump that is gone
    if os.environ.get("GOVRIX_DATABASE_URL"):
        # `up` did not start the embedded cluster then (tests may be using it): not ours to stop.
        print("embedded PostgreSQL: left alone (GOVRIX_DATABASE_URL is set)")
    else:
        pgembed.stop()
        print(f"embedded PostgreSQL: {pgembed.status()}")
    left = [r for r in (sup, *recs.values()) if r is not None and r.members()]
    return 1 if left else 0


def _pg_pid() -> str:
    c = pgembed.cluster()
    try:
        return f", pid {int((c.data / 'postmaster.pid').read_text().split()[0])}"
    except (OSError, ValueError, IndexError):
        return ""


def status() -> int:
    recs = {r.name: r for r in records()}
    for name in (SUPERVISOR, *COMPONENTS):
        r = recs.get(name)
        label = "up (supervisor)" if name == SUPERVISOR else name
        if r is None:
            print(f"{label}: not running (no pidfile in {RUN})")
            continue
        pids = r.members()
        if not pids:
            print(f"{label}: not running (stale pidfile: pid {r.pid} is gone)")
            continue
        detail = ", ".join(describe_pid(p) for p in pids if p != r.pid)
        alive = "running" if r.leader_alive() else "leader gone, group still running"
        line = f"{label}: {alive}, pid {r.pid}"
        if detail:
            line += f"; also in its group: {detail}"
        if r.ports:
            answers = [str(p) for p in r.ports if accepts("127.0.0.1", p)]
            line += f"; ports {', '.join(map(str, r.ports))} (accepting: {', '.join(answers) or 'none'})"
        print(line)
    pg = pgembed.status()
    print(f"embedded PostgreSQL: {pg}{_pg_pid() if pg.startswith('running') else ''}")
    print(
        f"GOVRIX_DATABASE_URL: {'set' if os.environ.get('GOVRIX_DATABASE_URL') else 'unset (embedded)'}"
    )
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="govrix")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start everything in the foreground")
    p_up.add_argument("--no-api", action="store_true")
    p_up.add_argument("--no-proxy", action="store_true")
    p_up.add_argument("--proxy-host", default=os.environ.get("GOVRIX_PROXY_HOST", "127.0.0.1"))
    p_up.add_argument("--api-host", default=os.environ.get("GOVRIX_API_HOST", "127.0.0.1"))
    sub.add_parser("down", help="stop everything `up` started, and the embedded PostgreSQL")
    sub.add_parser("status", help="show each component, its pid and whether it runs")
    args = ap.parse_args(argv[1:])
    if args.cmd == "up":
        return up(args)
    if args.cmd == "down":
        return down()
    return status()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
