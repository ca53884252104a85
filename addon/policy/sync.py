"""Policy versions in PostgreSQL: this proxy applies the newest one, and publishes its file.

``policy_versions`` (sql/008) holds every policy ever made active; the highest id is the active
one, and each insert is announced on ``govrix_policies``. One :class:`~addon.listen.Listener`
thread (``govrix-policies``) refreshes on start, on every announcement and every ``interval``
seconds; a refresh

1. publishes the policy file (``GOVRIX_POLICY_FILE``) as a new version when its last good text
   has not been handled yet (at start, and after each change the file watcher loaded): only when
   it compiled, and only if it is still newer than every version (its modification time against
   their ``created_at``) and differs from the newest version from the same path and from the
   newest version overall. The condition and the insert are one statement under a transaction
   advisory lock, so proxies sharing one file publish it once;
2. reads the newest version and, when its id is not the one loaded, compiles it and swaps it in.
   A version that does not compile is logged and counted (``govrix_policy_rejected_total``), is
   not retried, and the rules already active stay: never fewer rules by accident.

While PostgreSQL is away the file still applies locally (the watcher does not need the database)
and is published when the database returns, if it is still newer. Precedence is documented in
``docs/policy.md`` ("Where the policy lives").
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import psycopg

from addon.listen import Listener
from addon.metrics import CallbackCollector
from addon.policy.store import FileText, PolicyStore

__all__ = ["CHANNEL", "PolicySync", "export_metrics"]

log = logging.getLogger("govrix.policy")

CHANNEL = "govrix_policies"
#: Serialises publishers of a policy file: ``hashtext('govrix_policies')`` would do as well, a
#: constant keeps the lock visible in ``pg_locks`` under one recognisable number.
_PUBLISH_LOCK = 0x60F7_1C1E

_PUBLISH = """
INSERT INTO policy_versions (who, source, checksum, rule_count, yaml)
SELECT %(who)s, %(source)s, %(checksum)s, %(rules)s, %(yaml)s
WHERE NOT EXISTS (
        SELECT 1 FROM policy_versions WHERE created_at > to_timestamp(%(mtime)s))
  AND %(checksum)s IS DISTINCT FROM (
        SELECT checksum FROM policy_versions WHERE source = %(source)s ORDER BY id DESC LIMIT 1)
  AND %(checksum)s IS DISTINCT FROM (
        SELECT checksum FROM policy_versions ORDER BY id DESC LIMIT 1)
RETURNING id
"""


class PolicySync:
    """Keeps one :class:`PolicyStore` on the newest policy version; publishes its file.

    ``publish=False`` only follows the versions (a process that shares the proxy's file but
    must not write, e.g. a recorder process).
    """

    def __init__(
        self,
        store: PolicyStore,
        conninfo: str,
        *,
        who: str | None = None,
        publish: bool = True,
        interval: float = 5.0,
        reconnect_delay: float = 1.0,
    ) -> None:
        self.store = store
        self.who = who or f"proxy:{socket.gethostname()}"
        self.publish = publish
        #: Checksum of the file text last published or judged not newer: handled, not retried.
        self._handled: str | None = None
        #: The newest version id that did not compile: refused once, not retried every pass.
        self._refused: int | None = None
        self.published = 0
        self.listener = Listener(
            conninfo,
            CHANNEL,
            self._refresh,
            name="policies",
            interval=interval,
            due=self._file_pending,
            reconnect_delay=reconnect_delay,
            logger=log,
        )

    @property
    def live(self) -> bool:
        return self.listener.live

    def start(self) -> PolicySync:
        self.listener.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.listener.stop(timeout)

    def _pending_file(self) -> FileText | None:
        f = self.store.file
        if not self.publish or f is None or f.checksum == self._handled:
            return None
        return f

    def _file_pending(self) -> bool:
        return self._pending_file() is not None

    def _refresh(self, conn: psycopg.Connection[Any]) -> None:
        # Read before anything else: a file loaded after this point is newer than what we read
        # below, and ``apply_version`` then leaves it in place for the next pass.
        generation = self.store.generation
        if (f := self._pending_file()) is not None:
            self._publish(conn, f)
        row = conn.execute("SELECT id FROM policy_versions ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return  # no versions yet: the file (or no policy) stays in force
        newest = int(row[0])
        if newest == self.store.active.version or newest == self._refused:
            return
        full = conn.execute(
            "SELECT source, yaml FROM policy_versions WHERE id = %s", (newest,)
        ).fetchone()
        if full is None:
            return  # deleted meanwhile: the next pass reads the new newest
        if self.store.apply_version(newest, full[1], full[0], unless_changed_since=generation):
            self._refused = None
        elif self.store.generation == generation:
            self._refused = newest  # it did not compile (logged and counted by the store)

    def _publish(self, conn: psycopg.Connection[Any], f: FileText) -> None:
        source = f"file:{f.path}"
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))
            row = conn.execute(
                _PUBLISH,
                {
                    "who": self.who,
                    "source": source,
                    "checksum": f.checksum,
                    "rules": f.rules,
                    "yaml": f.text,
                    "mtime": f.mtime,
                },
            ).fetchone()
        self._handled = f.checksum
        if row is not None:
            self.published += 1
            log.info(
                "policy file %s published as version %d (sha256:%s, %d rules)",
                f.path,
                row[0],
                f.checksum[:12],
                f.rules,
            )
        else:
            log.info(
                "policy file %s (sha256:%s) not published: already stored, or an existing "
                "version is newer than the file",
                f.path,
                f.checksum[:12],
            )


def export_metrics(live: CallbackCollector, store: PolicyStore, sync: PolicySync | None) -> None:
    """The loaded version, per proxy, where an operator compares them: the scrape endpoint."""
    live.gauges["govrix_policy_version"] = (
        "Id of the policy version in force (policy_versions.id); 0 when the rules came from the "
        "policy file without a stored version, or there are none.",
        lambda: float(store.active.version or 0),
    )
    live.gauges["govrix_policy_rules"] = (
        "Rules in the policy in force.",
        lambda: float(store.active.rules),
    )
    live.labelled_gauges["govrix_policy_info"] = (
        "1, labelled with the policy in force: its version id, sha256 checksum and origin.",
        ["version", "checksum", "origin"],
        lambda: {
            (
                str(store.active.version or ""),
                store.active.checksum or "",
                store.active.origin,
            ): 1.0
        },
    )
    # A list, not a dict: replace ours rather than add a second family on a second start.
    live.labelled[:] = [m for m in live.labelled if m[0] != "govrix_policy_rejected"]
    live.labelled.append(
        (
            "govrix_policy_rejected",
            "Policy texts that did not compile (the previous rules stayed), by origin.",
            ["origin"],
            lambda: {(k,): float(v) for k, v in store.rejected.items()},
        )
    )
    if sync is not None:
        live.gauges["govrix_policy_sync_live"] = (
            "1 when the policy version listener is connected to PostgreSQL.",
            lambda: float(sync.live),
        )
