"""Run the whole stack in the foreground: PostgreSQL, migrations, the API and the proxy.

    python -m scripts.stack up [--no-api] [--no-proxy]   (Ctrl-C, or `down` elsewhere, stops it)
    python -m scripts.stack down | status

The database is found as every operator command finds it (``scripts/database.py``):
``GOVRIX_DATABASE_URL``, else the embedded cluster of this checkout (DESIGN.md §2), whose URL is
handed to the API and the proxy in ``GOVRIX_DATABASE_URL``. With ``GOVRIX_API_KEY`` unset a key is
generated once into ``.govrix/api_key`` (mode 600).

``up`` first checks that every port it will listen on is free (proxy, API, the proxy's metrics,
the ``GOVRIX_REVERSE`` listeners; ``scripts/plan.py``) and names the process holding a busy one
(``scripts/ports.py``); it starts the API and mitmdump each in its own process group (the
recorder process is mitmdump's child, so it is in mitmdump's group) and records one pidfile per
process under ``$GOVRIX_HOME/run/`` (``scripts/pidfiles.py``). It says "Govrix Scout is up."
only once the API answers ``/health`` and the proxy accepts connections on every port and has
written ``proxy.pid``. ``down`` asks the ``up`` process to stop what it started and then stops,
from the pidfiles, whatever is left (also after ``up`` was SIGKILLed); then the embedded
PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from scripts import database, pgembed
from scripts.pidfiles import (
    COMPONENTS,
    GROUP_GRACE,
    HOME,
    KILL_GRACE,
    LEADER_GRACE,
    ROOT,
    RUN,
    SUPERVISOR,
    Record,
    proc_stat,
    records,
    stop_records,
    wait_until,
)
from scripts.plan import (
    API_PORT,
    DEFAULT_HOST,
    PROXY_PORT,
    children,
    metrics_urls,
    planned_ports,
    worker_env,
    worker_metrics_port,
    worker_name,
    workers,
)
from scripts.ports import Port, accepts, busy_ports, describe_pid, http_ok

#: How long ``up`` waits for the API and the proxy to answer (GOVRIX_UP_TIMEOUT, seconds).
UP_TIMEOUT = float(os.environ.get("GOVRIX_UP_TIMEOUT", "60"))


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


def _ready(name: str, proc: subprocess.Popen[bytes], ports: list[Port]) -> bool:
    """The API answers /health; the proxy's addon runs (proxy.pid names our mitmdump) and every
    listener accepts connections."""
    if name == "api":
        return http_ok(ports[0].host, ports[0].port, "/health")
    try:
        pid = int((HOME / f"{name}.pid").read_text().strip() or 0)  # proxy.pid, proxy-2.pid…
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
        db = database.ready()
    except database.DatabaseError as e:
        print(f"govrix: {e}", file=sys.stderr)
        return 1
    url, applied = db.url, db.applied
    print(
        f"govrix: database ready ({'migrations applied: ' + ', '.join(applied) if applied else 'schema up to date'})",
        flush=True,
    )
    key = api_key()
    env = os.environ | {"GOVRIX_DATABASE_URL": url, "GOVRIX_API_KEY": key, "GOVRIX_HOME": str(HOME)}
    if (urls := metrics_urls()) and not args.no_proxy:
        # The Overview's proxy health: the scrape endpoint of each proxy worker started here.
        env.setdefault("GOVRIX_PROXY_METRICS_URLS", ",".join(urls))
    n = workers()
    listeners = [p for p in ports if p.role not in ("api", "proxy metrics")]
    by_name = {"api": [p for p in ports if p.role == "api"]}
    child_env: dict[str, dict[str, str]] = {"api": {}}
    for i in range(1, n + 1):
        name = worker_name(i)
        mp = worker_metrics_port(i)
        by_name[name] = listeners + [p for p in ports if p.role == "proxy metrics" and p.port == mp]
        child_env[name] = worker_env(i, n)
    for name, cmd in children(args):
        if stopping():
            return 130
        # Its own process group (and session): `down` can stop it, and everything it forks,
        # from any terminal; a Ctrl-C here reaches only us, and we stop it in order.
        p = subprocess.Popen(
            cmd,
            env=env | child_env[name],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
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
            lines.append(f"  proxy : http://{p.host}:{p.port}   (CA certificate: {ca})")
        elif p.role == "api":
            lines.append(f"  api   : http://127.0.0.1:{API_PORT}     (key in {HOME / 'api_key'})")
        elif p.role == "proxy metrics":
            lines.append(f"  metrics: http://127.0.0.1:{p.port}/metrics")
        else:
            lines.append(f"  {p.role}: http://127.0.0.1:{p.port}")
    lines.append(f"  stop  : scripts/govrix down   (pidfiles in {RUN})")
    transparent = os.environ.get("GOVRIX_PROXY_MODE", "regular") == "transparent"
    proxy = next((p for p in ports if p.role == "proxy"), None)
    if proxy is not None and transparent:
        lines += [
            "",
            f"Transparent mode: redirect an agent's TCP port 443 to {proxy.host}:{proxy.port}, e.g.",
            f"  iptables -t nat -A PREROUTING -i <agent interface> -p tcp --dport 443 -j REDIRECT --to-ports {proxy.port}",
            f'and have the agent trust {ca} (README, "Transparent mode").',
        ]
    elif proxy is not None:
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
    for proxy_pid in HOME.glob("proxy*.pid"):  # proxy.pid, and proxy-N.pid of workers
        with contextlib.suppress(OSError, ValueError):
            if proc_stat(int(proxy_pid.read_text().strip())) is None:
                proxy_pid.unlink()  # written by a proxy that is gone
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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="govrix")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start everything in the foreground")
    p_up.add_argument("--no-api", action="store_true")
    p_up.add_argument("--no-proxy", action="store_true")
    p_up.add_argument("--proxy-host", default=os.environ.get("GOVRIX_PROXY_HOST", DEFAULT_HOST))
    p_up.add_argument("--api-host", default=os.environ.get("GOVRIX_API_HOST", DEFAULT_HOST))
    sub.add_parser("down", help="stop everything `up` started, and the embedded PostgreSQL")
    sub.add_parser("status", help="show each component, its pid and whether it runs")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    if args.cmd == "up":
        return up(args)
    if args.cmd == "down":
        return down()
    return status()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
