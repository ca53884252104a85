"""The active rule set and where it came from; a bad new file or version keeps the old rules.

Two sources feed one :class:`PolicyStore` (``docs/policy.md``, "Where the policy lives"): the
policy file, checked by :func:`watch`, and the versions in PostgreSQL, applied by
:class:`addon.policy.sync.PolicySync`. Either swaps ``current`` whole; neither can leave a call
without rules it had, because a text that does not compile is refused before the swap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from addon.policy.evaluate import PolicySet
from addon.policy.model import Decision, PolicyContext, PolicyError
from addon.policy.parse import load_policy_text

__all__ = ["Active", "FileText", "PolicyStore", "checksum", "watch"]

log = logging.getLogger("govrix.policy")

_Signature = tuple[int, int, int, int]  # (device, inode, size, mtime_ns)


def checksum(text: str) -> str:
    """sha256 hex of the UTF-8 text: the identity of a policy across proxies and the database."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Active:
    """What the active rules came from, for metrics and log lines."""

    origin: str  # "none", "file" or "version"
    version: int | None  # policy_versions.id when the rules came from the database
    checksum: str | None
    source: str  # the file path, or the version's source ('api', 'file:<path>')
    rules: int

    def describe(self) -> str:
        """``version 8 sha256:0a1b2c3d4e5f (3 rules, from api)`` for a log line."""
        if self.origin == "none":
            return "no policy"
        digest = f"sha256:{(self.checksum or '')[:12]}"
        what = f"version {self.version}" if self.version is not None else "file"
        return f"{what} {digest} ({self.rules} rules, from {self.source})"


NO_POLICY = Active("none", None, None, "", 0)


@dataclass(frozen=True, slots=True)
class FileText:
    """The last policy file that compiled: what the GitOps path publishes as a version."""

    path: str  # absolute
    text: str
    checksum: str
    mtime: float  # seconds since the epoch: "newer" is judged against versions' created_at
    rules: int


class PolicyStore:
    """Holds the active :class:`PolicySet`; reloads it when the policy file changes.

    Readers take ``store.current`` once per call; a reload swaps the reference (atomic in
    CPython), so a call always sees one whole rule set. ``active`` describes it; ``file`` is the
    last good file text; ``rejected`` counts texts refused by origin ("file", "version").
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: str | None = os.fspath(path) if path is not None else None
        self.current: PolicySet = PolicySet()
        self.active: Active = NO_POLICY
        self.file: FileText | None = None
        self.generation = 0  # bumped on every successful (re)load, from either source
        self.last_error: PolicyError | None = None
        self.rejected: dict[str, int] = {"file": 0, "version": 0}
        self._signature: _Signature | None = None
        self._lock = threading.Lock()

    def evaluate(self, ctx: Mapping[str, object] | PolicyContext) -> Decision:
        """Evaluate the active rules against ``ctx``."""
        return self.current.evaluate(ctx)

    # -- the file -----------------------------------------------------------------------------

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
        self._signature = sig = _signature(path)
        try:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise PolicyError(path, None, f"cannot read policy file: {e}") from None
            policies = load_policy_text(text, path)
        except PolicyError as e:
            self.last_error = e
            self.rejected["file"] += 1
            raise
        digest = checksum(text)
        mtime = sig[3] / 1e9 if sig is not None else 0.0
        self.file = FileText(os.path.abspath(path), text, digest, mtime, len(policies))
        self._swap(policies, Active("file", None, digest, path, len(policies)))
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
                log.error("%s; keeping %s", self.last_error, self.active.describe())
                return False
            try:
                self._load_locked(path)
            except PolicyError as e:
                log.error("policy reload failed: %s; keeping %s", e, self.active.describe())
                return False
            log.info("policy reloaded from %s: %s", path, self.active.describe())
            return True

    # -- versions from the database -------------------------------------------------------------

    def apply_version(
        self, version: int, text: str, source: str, *, unless_changed_since: int | None = None
    ) -> bool:
        """Compile stored version ``version`` and make it active; False when it was refused.

        A text that does not compile raises nothing: it is logged, counted in ``rejected`` and
        the active rules stay. ``unless_changed_since`` (a ``generation``) skips the swap when
        another load happened meanwhile: a file edited while the caller read the database is
        newer than what it read, and the caller's next pass sees it.
        """
        with self._lock:
            if unless_changed_since is not None and self.generation != unless_changed_since:
                return False
            try:
                policies = load_policy_text(text, f"policy version {version}")
            except PolicyError as e:
                self.last_error = e
                self.rejected["version"] += 1
                log.error(
                    "policy version %d rejected: %s; keeping %s",
                    version,
                    e,
                    self.active.describe(),
                )
                return False
            self.last_error = None
            self._swap(policies, Active("version", version, checksum(text), source, len(policies)))
        log.info("policy active: %s", self.active.describe())
        return True

    def _swap(self, policies: PolicySet, active: Active) -> None:
        # ``current`` first: a reader that sees the new ``active`` never sees older rules.
        self.current = policies
        self.active = active
        self.generation += 1
        self.last_error = None


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
