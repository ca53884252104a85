"""What a process uses, from /proc: CPU (utime + stime of all its threads), resident memory, and
its process tree (a proxy and its recorder child, a gateway and its workers)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_of(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant, forked from any of its threads (a child started from a
    thread is listed under that thread's task, not the main one's)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # it ended meanwhile
                todo += [int(x) for x in task.read_text().split()]
    return out


def rss_of(pid: int) -> int:
    """Resident memory of a process in bytes (VmRSS); 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_cpu(pid: int) -> float:
    """CPU seconds so far of ``pid`` and its descendants (those alive now)."""
    return sum(cpu_of(p) for p in tree(pid))


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (shared pages counted in each)."""
    return sum(rss_of(p) for p in tree(pid))
