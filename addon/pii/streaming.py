"""Scanning streamed text (LLM responses) delta by delta, with bounded memory."""

from __future__ import annotations

from typing import Final

from addon.pii.engine import Finding, scan_text

# Characters that never occur inside a long PII value (JWT, key, email), so the text after the last
# one is the only token that may still be growing.
_SEPARATORS: Final = " \n\t\"',;<>(){}[]"


def _last_separator(buf: str, stable: int) -> int:
    """Index of the last separator in ``buf`` (-1 if none); only positions < ``stable`` matter."""
    stable = max(stable, 0)
    if any(buf.find(sep, stable) >= 0 for sep in _SEPARATORS):
        return len(buf)  # a separator after the stable point: nothing long is still open
    return max(buf.rfind(sep, 0, stable) for sep in _SEPARATORS)


class StreamScanner:
    """Counts PII in text that arrives in small deltas (streamed LLM responses).

    A value split across deltas is found once. Only a bounded window is kept: the last ``hold``
    characters (a match ending there may still grow, so it is not counted yet), ``context``
    characters before them for look-behind rules, and at most ``max_pending`` characters of an
    unfinished token (JWTs and key blocks are long). Text is rescanned once ``scan_every`` new
    characters have arrived, so per-delta cost is an append.
    """

    __slots__ = (
        "_base",
        "_buf",
        "_committed_end",
        "_context",
        "_counts",
        "_floor",
        "_hold",
        "_max_pending",
        "_parts",
        "_scan_every",
        "_unscanned",
    )

    def __init__(
        self,
        *,
        hold: int = 128,
        context: int = 64,
        scan_every: int = 1024,
        max_pending: int = 16384,
    ) -> None:
        self._hold = hold
        self._context = context
        self._scan_every = scan_every
        self._max_pending = max_pending
        self._parts: list[str] = []
        self._buf = ""
        self._base = 0  # absolute offset of _buf[0] in the whole stream
        self._floor = 0  # matches starting before this offset were already decided
        self._committed_end = 0  # end of the last counted match
        self._unscanned = 0
        self._counts: dict[str, int] = {}

    @property
    def buffered_chars(self) -> int:
        """Characters currently held in memory (for tests and metrics)."""
        return len(self._buf) + sum(len(part) for part in self._parts)

    def feed(self, text_delta: str) -> None:
        """Add the next piece of streamed text."""
        if not text_delta:
            return
        self._parts.append(text_delta)
        self._unscanned += len(text_delta)
        if self._unscanned >= self._scan_every:
            self._scan()

    def findings(self, path: str) -> list[Finding]:
        """Findings so far, including matches at the very end of the text received so far.

        Calling it does not end the stream: matches still open at the end are counted here but
        not committed, so later deltas that extend them are not counted twice.
        """
        counts = dict(self._counts)
        for kind in self._scan_window(final=True):
            counts[kind] = counts.get(kind, 0) + 1
        return [Finding(type=kind, count=n, path=path) for kind, n in sorted(counts.items())]

    def _take_parts(self) -> None:
        if self._parts:
            self._buf += "".join(self._parts)
            self._parts.clear()

    def _scan_window(self, *, final: bool) -> list[str]:
        """Types of the undecided matches in the window; commits the stable ones unless final."""
        self._take_parts()
        base, buf = self._base, self._buf
        total = base + len(buf)
        stable_before = total - self._hold
        lowest = max(self._floor, self._committed_end)
        pending_start = -1
        open_kinds: list[str] = []
        committed_end = self._committed_end
        for kind, start, end in scan_text(buf):
            start, end = base + start, base + end
            if start < lowest or start < committed_end:
                continue
            if final:
                open_kinds.append(kind)
            elif end <= stable_before:
                self._counts[kind] = self._counts.get(kind, 0) + 1
                committed_end = end
            elif pending_start < 0:
                pending_start = start
        if final:
            return open_kinds
        self._committed_end = committed_end
        # Decide everything that can no longer change: up to `hold` before the end, but never
        # past the start of the trailing token (a JWT or email still arriving) or of an open match.
        floor = min(stable_before, base + _last_separator(buf, stable_before - base) + 1)
        if pending_start >= 0:
            floor = min(floor, pending_start)
        floor = max(floor, total - self._max_pending, self._floor)
        self._floor = floor
        keep_from = max(floor - self._context, base)
        self._buf = buf[keep_from - base :]
        self._base = keep_from
        return open_kinds

    def _scan(self) -> None:
        self._scan_window(final=False)
        self._unscanned = 0
