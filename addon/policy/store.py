"""The active rule set, swapped when the policy file changes; a bad new file keeps the old rules."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping

from addon.policy.evaluate import PolicySet
from addon.policy.model import Decision, PolicyContext, PolicyError
from addon.policy.parse import load_policy_file

__all__ = ["PolicyStore", "watch"]

log = logging.getLogger("govrix.policy")

_Signature = tuple[int, int, int, int]  # (device, inode, size, mtime_ns)


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyStore:
    """Holds the active :class:`PolicySet`; reloads it when the policy file changes.

    Readers take ``store.current`` once per call; a reload swaps the reference (atomic in
    CPython), so a call always sees one whole rule set.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: str | None = os.fspath(path) if path is not None else None
        self.current: PolicySet = PolicySet()
        self.generation = 0  # bumped on every successful (re)load
        self.last_error: PolicyError | None = None
        self._signature: _Signature | None = None
        self._lock = threading.Lock()

    def evaluate(self, ctx: Mapping[str, object] | PolicyContext) -> Decision:
        """Evaluate the active rules against ``ctx``."""
        return self.current.evaluate(ctx)

    def load(self, path: str | os.PathLike[str] | None = None) -> PolicySet:
        """Load ``path`` (default: the store's path) and make it active.

        Raises :class:`PolicyError` and leaves the active rules untouched when the file is bad.
        """
        if path is not None:
            self.path = os.fspath(path)
        if self.path is None:
            raise PolicyError("<none>", None, "no policy file configured")
        with self._lock:
            return self._load_locked(self.path)

    def _load_locked(self, path: str) -> PolicySet:
        # Stat before reading: a write that lands during the read changes the signature again
        # and is picked up on the next check.
        self._signature = _signature(path)
        try:
            policies = load_policy_file(path)
        except PolicyError as e:
            self.last_error = e
            raise
        self.current = policies
        self.generation += 1
        self.last_error = None
        return policies

    def maybe_reload(self) -> bool:
        """Reload if the file's inode, size or mtime changed; True when new rules became active.

        A bad or missing file is logged (once per change) and the previous rules stay active.
        """
        path = self.path
        if path is None:
            return False
        with self._lock:
            sig = _signature(path)
            if sig == self._signature:
                return False
            if sig is None:
                self._signature = None
                self.last_error = PolicyError(path, None, "policy file is missing")
                log.error("%s; keeping %d previous rules", self.last_error, len(self.current))
                return False
            try:
                policies = self._load_locked(path)
            except PolicyError as e:
                log.error(
                    "policy reload failed: %s; keeping %d previous rules", e, len(self.current)
                )
                return False
            log.info(
                "policy reloaded from %s: %d rules (generation %d)",
                path,
                len(policies),
                self.generation,
            )
            return True


async def watch(store: PolicyStore, interval: float = 1.0) -> None:
    """Check the policy file every ``interval`` seconds until cancelled.

    The stat and any reload run in a worker thread so a slow disk never stalls the proxy loop.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(store.maybe_reload)
        except Exception:  # a watcher that dies silently would freeze the rules forever
            log.exception("policy watcher error")
