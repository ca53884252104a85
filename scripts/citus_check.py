"""Would the schema distribute with Citus, and would the API's queries stay on one shard?

    python -m scripts.citus_check [DATABASE_URL]                  (else GOVRIX_DATABASE_URL)
    python -m scripts.citus_check --schema-only [DATABASE_URL]    the checks a plain PostgreSQL can do

Where the ``citus`` extension is created in the database, it builds a scratch schema from our
migrations (``sql/``, with the key change below), distributes it as ``LAYOUT`` says, checks that
new day partitions are distributed as the writer creates them, EXPLAINs the statements the API
and the writer run most (taken from their modules) and reports, for each, whether Citus routes it
to one shard or fans it out; then drops the schema. Where Citus is not installed it says so and
exits 0 without touching anything. ``--schema-only`` builds the scratch schema on any PostgreSQL
and checks the layout against it: every table placed, every unique constraint of a distributed
table holding its distribution column, foreign keys and triggers only where Citus allows them.

Exit status: 0 all checks held (or Citus absent), 1 a check failed, 2 no database to check.

The layout, and why (docs/deploy.md, "Citus"):

- ``events`` and ``sessions`` are distributed by session (``events.session_id``,
  ``sessions.id``), co-located: a session's hash chain, its timeline and its verification live on
  one shard, and the writer's chain-head upsert touches one shard per session. ``events`` needs a
  changed key: its primary key ``(id, "timestamp")`` must also hold ``session_id``
  (``KEY_CHANGES``; a migration to write, not in ``sql/`` yet). Queries by agent fan out (every
  shard answers from its ``(agent_id, "timestamp")`` index, ORDER BY/LIMIT pushed down).
- Everything else stays a plain table on the coordinator. ``agents``, ``budgets`` and
  ``policy_versions`` carry the NOTIFY triggers the proxies LISTEN to: Citus runs a distributed
  or reference table's triggers on the shards' nodes, whose NOTIFY would not reach listeners on
  the coordinator. The scoring tables (``actions``, ``scores``, ``scoring_queue``,
  ``agent_activity``) would distribute by ``customer_id`` (it leads every key), but the queue's
  claim is one ``FOR UPDATE SKIP LOCKED`` across customers, which Citus runs only on one shard.
  The rest is small and read by key. No table has to be a reference table for today's queries
  (none joins ``events`` or ``sessions`` with another table).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Kind = Literal["distributed", "reference", "local"]


@dataclass(frozen=True)
class Placement:
    kind: Kind
    why: str
    column: str | None = None
    colocate_with: str | None = None


_NOTIFY = "NOTIFY trigger: must fire where the proxies LISTEN (the coordinator)"
_SCORING = "scoring: the queue claim is FOR UPDATE SKIP LOCKED across customers"
_SMALL = "small, read by key on the coordinator"

LAYOUT: dict[str, Placement] = {
    "events": Placement("distributed", "the event stream, by session", "session_id"),
    "sessions": Placement("distributed", "chain heads, with their events", "id", "events"),
    "agents": Placement("local", _NOTIFY),
    "budgets": Placement("local", _NOTIFY),
    "policy_versions": Placement("local", _NOTIFY),
    "actions": Placement("local", _SCORING),
    "scores": Placement("local", _SCORING),
    "scoring_queue": Placement("local", _SCORING),
    "agent_activity": Placement("local", _SCORING),
    "api_keys": Placement("local", _SMALL),
    "budget_usage": Placement("local", _SMALL),
    "budget_reservations": Placement("local", _SMALL),
    "budget_leases": Placement("local", "granted under pg_advisory_xact_lock, a per-node lock"),
    "audit_log": Placement("local", _SMALL),
    "console_sessions": Placement("local", _SMALL),
    "govrix_settings": Placement("local", "read by the partition functions on the coordinator"),
    "govrix_migrations": Placement("local", "the migration runner's own record"),
}

#: Keys that must change before distribution: Citus needs the distribution column in every
#: primary key and unique constraint. Applied to the scratch schema only.
KEY_CHANGES: dict[str, tuple[str, ...]] = {
    "events": (
        "ALTER TABLE events DROP CONSTRAINT events_pkey",
        'ALTER TABLE events ADD PRIMARY KEY (id, "timestamp", session_id)',
    ),
}

SHARD_COUNT = 4  # enough to tell one shard from many; the scratch schema stays small


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)

    def ok(self, line: str) -> None:
        print(f"  ok    {line}")

    def fail(self, line: str) -> None:
        print(f"  FAIL  {line}")
        self.failures.append(line)

    def note(self, line: str) -> None:
        print(f"  note  {line}")


# -- the layout against the schema (any PostgreSQL) ----------------------------------------------


def layout_problems(
    tables: Iterable[str],
    unique: Iterable[tuple[str, str, Sequence[str], bool]],
    fkeys: Iterable[tuple[str, str, str, Sequence[str]]],
    triggers: Iterable[tuple[str, str]],
    layout: dict[str, Placement] = LAYOUT,
) -> list[str]:
    """What keeps ``layout`` from distributing this schema (empty when nothing does).

    ``unique``: (table, index, columns, has expressions); ``fkeys``: (table, constraint,
    referenced table, columns); ``triggers``: (table, trigger).
    """
    problems: list[str] = []
    for t in sorted(set(tables) - set(layout)):
        problems.append(f"table {t} has no Citus placement: add it to LAYOUT")
    for table, index, columns, exprs in unique:
        p = layout.get(table)
        if p is None or p.kind != "distributed":
            continue
        if p.column not in columns or exprs:
            problems.append(
                f"{table}: unique index {index} ({', '.join(columns)}) lacks the distribution "
                f"column {p.column}"
            )
    for table, name, ref, columns in fkeys:
        a, b = layout.get(table), layout.get(ref)
        if a is None or b is None:
            continue
        if a.kind == "distributed" and b.kind == "distributed":
            same_group = (a.colocate_with or table) == (b.colocate_with or ref)
            if not same_group or a.column not in columns:
                problems.append(f"{table}: foreign key {name} to {ref} is not co-located")
        elif a.kind != b.kind and not (a.kind == "distributed" and b.kind == "reference"):
            problems.append(f"{table}: foreign key {name} from a {a.kind} to a {b.kind} table")
    for table, trigger in triggers:
        p = layout.get(table)
        if p is not None and p.kind != "local":
            problems.append(f"{table}: trigger {trigger} would run on the shards' nodes")
    return problems


def _catalog(cur: Any, schema: str) -> tuple[list[str], list[Any], list[Any], list[Any]]:
    tables = [
        r[0]
        for r in cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
            (schema,),
        ).fetchall()
    ]
    unique = cur.execute(
        "SELECT c.relname, ic.relname,"
        " ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o)"
        "       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.n ORDER BY k.o),"
        " i.indexprs IS NOT NULL"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND i.indisunique AND NOT c.relispartition",
        (schema,),
    ).fetchall()
    fkeys = cur.execute(
        "SELECT c.relname, k.conname, r.relname,"
        " ARRAY(SELECT a.attname::text FROM unnest(k.conkey) u(n)"
        "       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.n)"
        " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
        " JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND k.contype = 'f' AND NOT c.relispartition"
        " AND k.conparentid = 0",
        (schema,),
    ).fetchall()
    triggers = cur.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND NOT t.tgisinternal",
        (schema,),
    ).fetchall()
    return tables, unique, fkeys, triggers


# -- the statements the API and the writer run most ---------------------------------------------


@dataclass(frozen=True)
class Probe:
    label: str
    expect: Literal["router", "multi-shard", "local"]
    build: Callable[[], tuple[Any, Sequence[Any] | dict[str, Any]]]
    #: Statements run first, in the same rolled-back transaction (e.g. the writer's temp table).
    setup: Callable[[], Sequence[str]] | None = None


def probes() -> list[Probe]:
    """The statements, taken from the modules that run them (a renamed one fails its probe)."""
    from psycopg import sql

    sid, aid = "ses_01JCITUSCHECK0000000000000", "agt_citusprobe00000000000000"
    now = datetime.now(UTC)
    window = {"from": now - timedelta(days=1), "to": now, "agent_id": None}

    def page(ascending: bool, **filters: Any) -> tuple[Any, list[Any]]:
        # As api.events.event_page composes a page (no cursor).
        from api import events

        conds, params = events.EventFilters(**filters).conditions()
        q = sql.SQL("SELECT {} FROM events WHERE {} {} LIMIT %s OFFSET %s").format(
            events.EVENT_COLUMNS,
            sql.SQL(" AND ").join(conds or [sql.SQL("TRUE")]),
            events._ORDER_ASC if ascending else events._ORDER_DESC,
        )
        return q, [*params, 50, 0]

    def verify() -> tuple[Any, list[Any]]:
        from api import sessions

        return sessions._VERIFY_Q, [sid]

    def usage() -> tuple[Any, dict[str, Any]]:
        from api import stats

        q = stats._USAGE_Q.format(
            refusals=stats._REFUSAL_COLUMNS,
            known=sql.Literal(list(stats._KNOWN_REFUSALS)),
            agent=sql.SQL(""),
        )
        return q, window

    def agents_window() -> tuple[Any, dict[str, Any]]:
        from api import stats

        return stats._AGENTS_Q.format(agent=sql.SQL("")), window

    def upsert_sessions() -> tuple[Any, list[Any]]:
        from addon.writer import rows

        t = now
        return rows._UPSERT_SESSIONS, [[sid], [aid], [t], [t], [1], [1], ["sha256:x"], "evt_x"]

    def merge_stage() -> tuple[Any, list[Any]]:
        from addon.writer import staging

        return staging._MERGE_STAGE, []

    def claim() -> tuple[Any, list[Any]]:
        from api.actions import queue

        return queue._CLAIM, [20]

    def stage_setup() -> Sequence[str]:
        from addon.writer import staging

        return (staging.CREATE_STAGE,)

    return [
        Probe("GET /sessions/{id}/verify: the session's events", "router", verify),
        Probe(
            "GET /sessions/{id}/verify: the chain head",
            "router",
            lambda: ("SELECT head_seq, head_hash FROM sessions WHERE id = %s", [sid]),
        ),
        Probe(
            "GET /events/sessions/{id}: a session's timeline",
            "router",
            lambda: page(True, session_id=sid),
        ),
        Probe("GET /events?session_id=", "router", lambda: page(False, session_id=sid)),
        Probe("writer: sessions' chain heads + NOTIFY (one session)", "router", upsert_sessions),
        Probe(
            "GET /events?agent_id= (and /agents/{id}/events)",
            "multi-shard",
            lambda: page(False, agent_id=aid),
        ),
        Probe("GET /events (newest first)", "multi-shard", lambda: page(False)),
        Probe(
            "GET /events/{id}",
            "multi-shard",
            lambda: ("SELECT id FROM events WHERE id = %s LIMIT 1", ["evt_x"]),
        ),
        Probe(
            "GET /events/stream: events after the last id",
            "multi-shard",
            lambda: ("SELECT id FROM events WHERE id > %s ORDER BY id LIMIT %s", ["evt_x", 100]),
        ),
        Probe("console Overview: usage by agent/model/provider", "multi-shard", usage),
        Probe("console Agents: per-agent totals", "multi-shard", agents_window),
        Probe(
            "writer: replayed spool through the staging table",
            "multi-shard",
            merge_stage,
            stage_setup,
        ),
        Probe("scoring queue claim (FOR UPDATE SKIP LOCKED)", "local", claim),
    ]


_TASKS = re.compile(r"Task Count: (\d+)")


def classify(plan: str) -> tuple[str, list[int]]:
    """``router`` (every Citus scan on one task), ``multi-shard``, or ``local`` (no Citus scan)."""
    counts = [int(n) for n in _TASKS.findall(plan)]
    if "Citus" not in plan and not counts:
        return "local", counts
    return ("router" if counts and all(n == 1 for n in counts) else "multi-shard"), counts


# -- running it ----------------------------------------------------------------------------------


def _citus_state(conn: Any) -> tuple[str | None, bool]:
    """(the citus version created in this database or None, whether the server has it at all)."""
    created = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'citus'"
    ).fetchone()
    return (created[0] if created else None), available is not None


def _build_scratch(url: str, schema: str) -> Any:
    """The scratch schema from our migrations (TimescaleDB off: Citus distributes plain
    partitioned tables), with ``KEY_CHANGES``; a connection whose search_path is that schema."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from scripts import migrate

    scoped = make_conninfo(url, options=f"-c search_path={schema} -c govrix.disable_timescale=on")
    migrate.apply(scoped)
    conn = psycopg.connect(scoped, autocommit=True)
    for statements in KEY_CHANGES.values():
        for s in statements:
            conn.execute(s)
    return conn


def _distribute(conn: Any, report: Report) -> None:
    conn.execute(f"SET citus.shard_count = {SHARD_COUNT}")
    for table, p in LAYOUT.items():
        if p.kind == "distributed":
            if p.colocate_with:
                conn.execute(
                    "SELECT create_distributed_table(%s, %s, colocate_with => %s)",
                    (table, p.column, p.colocate_with),
                )
            else:
                conn.execute("SELECT create_distributed_table(%s, %s)", (table, p.column))
            report.ok(f"{table} distributed by {p.column}")
        elif p.kind == "reference":
            conn.execute("SELECT create_reference_table(%s)", (table,))
            report.ok(f"{table} is a reference table")


def _partitions(conn: Any, schema: str, report: Report) -> None:
    """The writer's day partitions and retention, on the distributed ``events``."""
    today = datetime.now(UTC).date()
    ahead, old = today + timedelta(days=30), today - timedelta(days=30)
    conn.execute("SELECT govrix_ensure_partitions(%s, %s)", (ahead, ahead))
    conn.execute("SELECT govrix_ensure_partitions(%s, %s)", (old, old))
    part = f"events_{ahead:%Y%m%d}"
    row = conn.execute(
        "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass(%s)",
        (f"{schema}.{part}",),
    ).fetchone()
    if row:
        report.ok(f"a partition made by govrix_ensure_partitions ({part}) is distributed")
    else:
        report.fail(f"{part}, made by govrix_ensure_partitions, is not distributed")
    dropped = [r[0] for r in conn.execute("SELECT govrix_drop_partitions_older_than(7)")]
    if f"events_{old:%Y%m%d}" in dropped:
        report.ok("retention drops a distributed day partition")
    else:
        report.fail(f"retention did not drop events_{old:%Y%m%d} (dropped: {dropped})")


def _explain(conn: Any, report: Report) -> None:
    import psycopg
    from psycopg import sql

    for p in probes():
        try:
            query, params = p.build()
            setup = p.setup() if p.setup else ()
        except (AttributeError, ImportError) as e:
            report.fail(f"{p.label}: statement not found ({e})")
            continue
        cur = psycopg.ClientCursor(conn)
        try:
            with conn.transaction(force_rollback=True):
                for statement in setup:
                    cur.execute(statement)
                cur.execute(sql.SQL("EXPLAIN ") + _composable(query), params)
                plan = "\n".join(r[0] for r in cur.fetchall())
        except psycopg.Error as e:
            report.fail(f"{p.label}: Citus refuses it: {str(e).strip().splitlines()[0]}")
            continue
        got, counts = classify(plan)
        detail = f"{got}, task counts {counts}" if counts else got
        if got == p.expect:
            report.ok(f"{p.label}: {detail}")
        elif p.expect == "multi-shard" and got == "router":
            report.ok(f"{p.label}: {detail} (better than expected)")
        else:
            report.fail(f"{p.label}: expected {p.expect}, got {detail}")


def _composable(query: Any) -> Any:
    from psycopg import sql

    return query if isinstance(query, sql.Composable) else sql.SQL(query)


def run(url: str, *, schema_only: bool) -> int:
    import psycopg
    from psycopg import sql

    from scripts.database import redact

    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        print(f"citus_check: cannot connect to {redact(url)}: {e}", file=sys.stderr)
        return 2
    with admin:
        version, available = _citus_state(admin)
        if version is None and not schema_only:
            if available:
                print(
                    "citus_check: the citus extension is available on this server but not created "
                    "in this database (CREATE EXTENSION citus, with citus in "
                    "shared_preload_libraries): nothing checked. `--schema-only` checks the "
                    "layout without it."
                )
            else:
                print(
                    "citus_check: Citus is not installed on this server (no citus in "
                    "pg_available_extensions): nothing checked. `--schema-only` checks the "
                    "layout without it."
                )
            return 0
        schema = f"govrix_citus_check_{secrets.token_hex(4)}"
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        report = Report()
        try:
            print(f"scratch schema {schema} from sql/ (citus {version or 'absent'}):")
            conn = _build_scratch(url, schema)
            with conn:
                catalog = _catalog(conn, schema)
                problems = layout_problems(*catalog)
                for t in sorted(set(LAYOUT) - set(catalog[0])):
                    report.note(f"LAYOUT names {t}, which the migrations do not create")
                for line in problems:
                    report.fail(line)
                if not problems:
                    report.ok(
                        "every table placed; distributed tables' unique constraints hold their "
                        "distribution column; foreign keys and triggers where Citus allows them"
                    )
                if version is not None and not schema_only and not problems:
                    _distribute(conn, report)
                    _partitions(conn, schema, report)
                    _explain(conn, report)
        except psycopg.Error as e:
            report.fail(f"stopped: {str(e).strip().splitlines()[0]}")
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            print(f"scratch schema {schema} dropped")
    if report.failures:
        print(f"citus_check: {len(report.failures)} check(s) failed")
        return 1
    print("citus_check: all checks held")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.citus_check", description=__doc__)
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.add_argument("database_url", nargs="?", default=os.environ.get("GOVRIX_DATABASE_URL"))
    ap.add_argument("--schema-only", action="store_true", help="the checks without Citus")
    args = ap.parse_args(argv)
    if not args.database_url:
        print("citus_check: give a DATABASE_URL or set GOVRIX_DATABASE_URL", file=sys.stderr)
        return 2
    return run(args.database_url, schema_only=args.schema_only)


if __name__ == "__main__":
    raise SystemExit(main())
