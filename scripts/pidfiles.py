"""The processes ``up`` started: one pidfile each, and stopping them without hitting a stranger.

A pidfile (``$GOVRIX_HOME/run/<name>.json``) holds the pid, its start time (``/proc/<pid>/stat``)
and the boot id, so a recycled pid is never taken for ours. Stopping a process group: SIGTERM to
its leader, then to the group, then SIGKILL, each after a bounded wait.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("GOVRIX_HOME") or ROOT / ".govrix").absolute()
RUN = HOME / "run"
PROC = Path("/proc")
#: Seconds each stopping phase waits. The leader's share is the longest: mitmdump hands its
#: recorder child what it still holds and waits for it to drain before it exits.
LEADER_GRACE = 20.0
GROUP_GRACE = 5.0
KILL_GRACE = 5.0
SUPERVISOR = "up"
COMPONENTS = ("api", "proxy")


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
