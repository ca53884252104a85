"""Ports ``up`` listens on: whether they are free, who holds a busy one, whether they answer.

Who holds a port comes from ``/proc/net/tcp`` (and ``tcp6``) and the processes' fds: pids and
names when this user may look, else the socket's owning user.
"""

from __future__ import annotations

import http.client
import os
import pwd
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Port:
    """One port ``up`` listens on, who listens there, and the setting that moves it."""

    role: str
    host: str
    port: int
    setting: str


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
