"""Inline scores (an MCP call scored by the proxy, a tool call scored by the recorder): one
``actions`` row and one ``scores`` row each, stored at the next flush, idempotent by event id.

At most ``MAX_PENDING_SCORES`` wait for PostgreSQL; past that a score is dropped, counted in
``WriterStats.scores_dropped`` and logged. Rows PostgreSQL refuses are dropped the same way; rows
whose connection broke wait for the next one.
"""

from __future__ import annotations

import collections
import logging

import msgspec
import psycopg

from addon.writer.stats import WriterStats

log = logging.getLogger("govrix.writer")

_INSERT_ACTIONS = """
INSERT INTO actions (customer_id, event_id, agent_id, session_id, action, server_key,
                     resource_key, "timestamp", event)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (customer_id, event_id) DO NOTHING
"""
_INSERT_SCORES = """
INSERT INTO scores (customer_id, event_id, score, risk_level, confidence, reasoning, violations,
                    compliance_refs, mitigations, score_components, scoring_source, scorer_version)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s)
ON CONFLICT (customer_id, event_id) DO NOTHING
"""
MAX_PENDING_SCORES = 10_000
#: Rows per transaction.
_CHUNK = 1000


class ScoreRow(msgspec.Struct, gc=False):
    """An action scored inline by the proxy: one ``actions`` row and one ``scores`` row."""

    action: tuple[object, ...]  # the _INSERT_ACTIONS parameters
    score: tuple[object, ...]  # the _INSERT_SCORES parameters


class PendingScores:
    """Score rows waiting for the next flush, in order, bounded."""

    def __init__(self, stats: WriterStats) -> None:
        self.stats = stats
        self._rows: collections.deque[ScoreRow] = collections.deque()

    def __bool__(self) -> bool:
        return bool(self._rows)

    def add(self, row: ScoreRow) -> None:
        if len(self._rows) >= MAX_PENDING_SCORES:
            self.stats.scores_dropped += 1
            log.error(
                "inline score dropped: %d scores already wait for PostgreSQL", MAX_PENDING_SCORES
            )
            return
        self._rows.append(row)

    def write(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Store up to ``_CHUNK`` rows. ``psycopg.OperationalError`` is raised for the writer
        (the rows wait for the next connection); rows refused for their content are dropped."""
        if not self._rows:
            return
        rows = [self._rows.popleft() for _ in range(min(_CHUNK, len(self._rows)))]
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT_ACTIONS, [r.action for r in rows])
                cur.executemany(_INSERT_SCORES, [r.score for r in rows])
            self.stats.scores_written += len(rows)
        except psycopg.Error as e:
            if isinstance(e, psycopg.OperationalError):
                self._rows.extendleft(reversed(rows))  # keep them for the next connection
                raise
            self.stats.scores_dropped += len(rows)
            log.error("inline scores rejected by PostgreSQL (%d dropped): %s", len(rows), e)
