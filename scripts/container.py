"""The container's entry point: one image, each role run as ``scripts/govrix up`` runs it.

    python -m scripts.container migrate [--wait S]   apply sql/ to GOVRIX_DATABASE_URL, then exit
    python -m scripts.container api                  the API (``python -m api --host … --port …``)
    python -m scripts.container proxy                GOVRIX_PROXY_WORKERS lean proxies on one port
    python -m scripts.container health [ROLE]        liveness (the image's HEALTHCHECK, probes)
    python -m scripts.container ready [ROLE]         readiness (Kubernetes probes)
    python -m scripts.container ca DIR               a new CA for the proxies' Secret

The command lines are ``scripts/plan.py``'s, the ones ``up`` starts; the worker environment
(``GOVRIX_PROXY_WORKER``, ``GOVRIX_PROXY_REUSE_PORT``, the metrics port) too. What differs from
``up``, and why (docs/deploy.md):

- The database is external: ``GOVRIX_DATABASE_URL`` is required, never the embedded cluster.
  ``api``/``proxy`` first wait (``--schema-wait``, 300 s) until every migration of this image is
  applied, so a proxy never writes into a schema the migrate job has not made yet; a server that
  does not answer at all does not hold them (the proxy spools, as on one host).
- Nothing secret is generated: the API needs ``GOVRIX_API_KEY`` and the proxy
  ``GOVRIX_IDENTITY_SECRET`` (shared by every instance, or one agent gets a different id on each);
  ``up`` writes them into files of one checkout, which several containers do not share.
- It listens where ``GOVRIX_PROXY_HOST``/``GOVRIX_API_HOST`` say (the image sets 0.0.0.0).
- It runs as PID 1: it forwards SIGTERM/SIGINT, stops its children as ``down`` does (SIGTERM to
  each leader, then its group, then SIGKILL, after the same waits) and reaps orphans. A child that
  exits stops the rest, and the container exits with its status, for the orchestrator to restart.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts import plan
from scripts.pidfiles import GROUP_GRACE, KILL_GRACE, LEADER_GRACE, ROOT, proc_stat

ROLES = ("migrate", "api", "proxy")
#: The files of mitmproxy's CA store (``confdir``) that the proxy reads: the key and certificate,
#: the certificate alone (agents trust it; ``mitm.it`` serves it) and the DH parameters, which
#: mitmproxy writes at start when they are missing (so a read-only Secret must carry them).
CA_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem")
SCHEMA_WAIT = 300.0
PROBE_TIMEOUT = 3.0


class ContainerError(RuntimeError):
    """The container cannot start its role; the message says what to set."""


@dataclass(frozen=True)
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]


def home(env: Mapping[str, str]) -> Path:
    return Path(env.get("GOVRIX_HOME") or ROOT / ".govrix").absolute()


def confdir(env: Mapping[str, str]) -> Path:
    """Where the proxy's CA lives: ``--set confdir=$GOVRIX_HOME/mitmproxy``, as ``up`` passes."""
    return home(env) / "mitmproxy"


def _require(env: Mapping[str, str], name: str, why: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ContainerError(f"{name} is not set: {why}")
    return value


def _database_url(env: Mapping[str, str]) -> str:
    return _require(
        env,
        "GOVRIX_DATABASE_URL",
        "the container has no embedded PostgreSQL; give it the server's URL "
        "(postgresql://user:password@host:5432/db)",
    )


def check_ca(directory: Path) -> str | None:
    """Why the proxy could not use ``directory`` as its CA store, or None when it can.

    mitmproxy creates a CA in an empty, writable directory (compose's volume); a read-only one (a
    Kubernetes Secret) must hold the key with the certificate and the DH parameters.
    """
    present = {f for f in CA_FILES if (directory / f).is_file()}
    existing = next(d for d in (directory, *directory.parents) if d.exists())  # mitmproxy mkdirs
    writable = existing.is_dir() and os.access(existing, os.W_OK)
    if "mitmproxy-ca.pem" not in present:
        if writable:
            return None
        return (
            f"{directory} holds no mitmproxy-ca.pem and is not writable: mount the CA there "
            f"({', '.join(CA_FILES)}; `python -m scripts.container ca DIR` makes them)"
        )
    if "mitmproxy-dhparam.pem" not in present and not writable:
        return (
            f"{directory} is read-only and has no mitmproxy-dhparam.pem, which mitmproxy would "
            "write at start: add it to the CA's Secret (`python -m scripts.container ca DIR`)"
        )
    return None


def children(role: str, env: Mapping[str, str]) -> list[Child]:
    """What ``role`` runs: ``up``'s own command lines (scripts/plan.py), with its environment."""
    base = dict(env)
    if role == "api":
        _require(env, "GOVRIX_API_KEY", "the API refuses to start without its bearer key")
        args = argparse.Namespace(
            no_api=False,
            no_proxy=True,
            api_host=env.get("GOVRIX_API_HOST") or plan.DEFAULT_HOST,
            proxy_host=plan.DEFAULT_HOST,
        )
        return [Child(name, cmd, base) for name, cmd in plan.children(args, env)]
    if role == "proxy":
        _require(
            env,
            "GOVRIX_IDENTITY_SECRET",
            "every proxy instance must share it, or one agent gets a different id on each",
        )
        args = argparse.Namespace(
            no_api=True,
            no_proxy=False,
            api_host=plan.DEFAULT_HOST,
            proxy_host=env.get("GOVRIX_PROXY_HOST") or plan.DEFAULT_HOST,
        )
        cmds = plan.children(args, env)
        # The CA store the command names (--set confdir=…), checked before anything starts.
        store = next(a for a in cmds[0][1] if a.startswith("confdir=")).partition("=")[2]
        if problem := check_ca(Path(store)):
            raise ContainerError(problem)
        n = len(cmds)
        return [
            Child(name, cmd, base | plan.worker_env(i, n, env))
            for i, (name, cmd) in enumerate(cmds, start=1)
        ]
    raise ContainerError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")


# -- the schema -------------------------------------------------------------------------------


def pending(applied: Mapping[str, str], sql_dir: Path | None = None) -> list[str]:
    """Migrations of this image missing from ``applied`` (name -> checksum), or changed there."""
    from scripts import migrate

    files = migrate.discover(sql_dir) if sql_dir else migrate.discover()
    return [m.name for m in files if applied.get(m.name) != m.checksum]


def _applied(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        if conn.execute("SELECT to_regclass('govrix_migrations')").fetchone() in (None, (None,)):
            return {}
        rows = conn.execute("SELECT name, checksum FROM govrix_migrations").fetchall()
    return {str(name): str(checksum) for name, checksum in rows}


def wait_for_schema(url: str, wait: float) -> str | None:
    """Return once every migration of this image is applied (None), or a warning when the server
    does not answer: the role starts anyway (the proxy spools until it is back, its fail mode
    decides the rest). ``ContainerError`` when the schema is still behind after ``wait`` seconds:
    events written into a schema the migrate job has not made yet would be refused.
    """
    import psycopg

    from scripts.database import redact

    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            missing = pending(_applied(url))
        except psycopg.OperationalError as e:
            return f"cannot reach {redact(url)} ({str(e).strip()}); starting anyway"
        except psycopg.Error as e:
            raise ContainerError(f"cannot read the schema of {redact(url)}: {e}") from e
        if not missing:
            return None
        if time.monotonic() >= deadline:
            raise ContainerError(
                f"migrations not applied after {wait:g}s: {', '.join(missing)} "
                "(run the migrate role first)"
            )
        if not told:
            print(
                f"govrix: waiting up to {wait:g}s for the migrate role to apply "
                f"{', '.join(missing)}",
                file=sys.stderr,
                flush=True,
            )
            told = True
        time.sleep(2.0)


def migrate(url: str, wait: float) -> list[str]:
    """Apply the missing migrations, retrying while the server does not answer (``wait`` s)."""
    from scripts import database

    deadline = time.monotonic() + wait
    while True:
        try:
            return list(database.ready(url).applied)
        except database.DatabaseError as e:
            # A server still starting is worth waiting for; a failing migration is not.
            if "cannot connect" not in str(e) or time.monotonic() >= deadline:
                raise ContainerError(str(e)) from e
        time.sleep(2.0)


# -- running children as PID 1 ----------------------------------------------------------------


def _signal_group(p: subprocess.Popen[bytes], sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)


class Supervisor:
    """Runs the children, each in its own process group, until one exits or we are told to stop."""

    def __init__(self, kids: Sequence[Child], *, cwd: Path = ROOT) -> None:
        self.kids = list(kids)
        self.cwd = cwd
        self.procs: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self.stopping = False

    def _reap(self) -> list[tuple[str, int]]:
        """Collect every exited child (ours, and orphans PID 1 inherits); ours with status."""
        ended: list[tuple[str, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return ended
            if pid == 0:
                return ended
            if pid in self.procs:
                name, p = self.procs.pop(pid)
                p.returncode = os.waitstatus_to_exitcode(status)
                ended.append((name, p.returncode))

    def stop(self) -> None:
        """SIGTERM to each leader, then to its group, then SIGKILL, as ``down`` does."""
        for phase, sig, group, grace in (
            ("leader", signal.SIGTERM, False, LEADER_GRACE),
            ("group", signal.SIGTERM, True, GROUP_GRACE),
            ("kill", signal.SIGKILL, True, KILL_GRACE),
        ):
            for _, p in self.procs.values():
                _signal_group(p, sig, group=group)
            deadline = time.monotonic() + grace
            while self.procs and time.monotonic() < deadline:
                for name, code in self._reap():
                    print(f"govrix: {name} stopped (status {code}, {phase})", flush=True)
                time.sleep(0.05)
            if not self.procs:
                return

    def run(self, poll: float = 0.2) -> int:
        def _stop(*_: object) -> None:
            self.stopping = True

        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for kid in self.kids:
                p = subprocess.Popen(
                    kid.cmd,
                    env=kid.env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self.procs[p.pid] = (kid.name, p)
            while not self.stopping:
                for name, code in self._reap():
                    print(f"govrix: {name} exited with status {code}; stopping", file=sys.stderr)
                    return code or 1
                time.sleep(poll)
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# -- health and readiness ---------------------------------------------------------------------


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _http_status(host: str, port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def probe(role: str, kind: str, env: Mapping[str, str]) -> str | None:
    """Why ``role`` is not healthy (``kind`` "health") or ready ("ready"); None when it is.

    The API: ``/health`` (the process answers) or ``/ready`` (it reaches PostgreSQL). A proxy:
    every worker's addon runs (its ``proxy*.pid`` names a live process, written once the
    governance state is loaded) and the proxy port accepts connections; ready also asks every
    worker's metrics endpoint (loopback only, addon/metrics.py) when metrics are on.
    """
    if role == "api":
        host = _loopback(env.get("GOVRIX_API_HOST", ""))
        port = int(env.get("GOVRIX_API_PORT") or 4001)
        path = "/health" if kind == "health" else "/ready"
        status = _http_status(host, port, path)
        return None if status == 200 else f"api {path} on {host}:{port}: {status or 'no answer'}"
    if role == "proxy":
        n = plan.workers(env)
        for i in range(1, n + 1):
            pid_file = home(env) / ("proxy.pid" if i == 1 else f"proxy-{i}.pid")
            try:
                pid = int(pid_file.read_text().strip() or 0)
            except (OSError, ValueError):
                return f"worker {i}: {pid_file} missing (the addon is not running yet)"
            if proc_stat(pid) is None:
                return f"worker {i}: pid {pid} from {pid_file} is not running"
            mp = plan.worker_metrics_port(i, env)
            if kind == "ready" and mp and _http_status("127.0.0.1", mp, "/metrics") != 200:
                return f"worker {i}: metrics on 127.0.0.1:{mp} do not answer"
        host = _loopback(env.get("GOVRIX_PROXY_HOST", ""))
        port = int(env.get("GOVRIX_PROXY_PORT") or 4000)
        return None if _accepts(host, port) else f"proxy {host}:{port} does not accept connections"
    return f"no probe for role {role!r}"


def _role_file(env: Mapping[str, str]) -> Path:
    return home(env) / "container.role"


# -- the CA -----------------------------------------------------------------------------------


def make_ca(directory: Path, key_size: int = 2048) -> list[Path]:
    """Create a CA in ``directory`` as mitmproxy does on first start; never replaces one."""
    from mitmproxy.certs import CertStore

    if (directory / "mitmproxy-ca.pem").exists():
        raise ContainerError(f"{directory / 'mitmproxy-ca.pem'} exists: not replacing a CA")
    CertStore.create_store(directory, "mitmproxy", key_size)
    return [directory / f for f in CA_FILES]


# -- command line -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m scripts.container", description=__doc__)
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="apply sql/ migrations to GOVRIX_DATABASE_URL and exit")
    m.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server")
    for role in ("api", "proxy"):
        r = sub.add_parser(role, help=f"run the {role} as `up` does")
        r.add_argument(
            "--schema-wait",
            type=float,
            default=SCHEMA_WAIT,
            help="seconds to wait for the migrations before giving up",
        )
    for kind in ("health", "ready"):
        p = sub.add_parser(kind, help=f"exit 0 when the role is {kind}")
        p.add_argument("role", nargs="?", choices=("api", "proxy"))
    c = sub.add_parser("ca", help="create a CA for the proxies (files for a Secret)")
    c.add_argument("dir", type=Path)
    return ap


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = dict(os.environ if env is None else env)
    try:
        if args.cmd == "migrate":
            done = migrate(_database_url(env), args.wait)
            print(f"migrations applied: {', '.join(done) if done else 'none (up to date)'}")
            return 0
        if args.cmd in ("api", "proxy"):
            kids = children(args.cmd, env)  # settings first: a missing one fails at once
            if warning := wait_for_schema(_database_url(env), args.schema_wait):
                print(f"govrix: {warning}", file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                _role_file(env).write_text(args.cmd + "\n")
            for kid in kids:
                print(f"govrix: starting {kid.name}: {' '.join(kid.cmd)}", flush=True)
            return Supervisor(kids).run()
        if args.cmd in ("health", "ready"):
            role = args.role
            if role is None:
                try:
                    role = _role_file(env).read_text().strip()
                except OSError:
                    print(f"govrix: no role started yet ({_role_file(env)})", file=sys.stderr)
                    return 1
            if problem := probe(role, args.cmd, env):
                print(f"govrix: {problem}", file=sys.stderr)
                return 1
            return 0
        files = make_ca(args.dir)
        print(f"CA written to {args.dir}. Store it as the proxies' Secret, e.g.:")
        print(
            "  kubectl create secret generic govrix-ca "
            + " ".join(f"--from-file={f}" for f in files)
        )
        print(f"Agents trust {files[1]} (SSL_CERT_FILE); keep {files[0]} (the key) secret.")
        return 0
    except ContainerError as e:
        print(f"govrix: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
