"""The review list: grey-zone pairs waiting for an operator, and every decision taken on a pair.

Why a small SQLite table (``<data dir>/matching.db``) and not events on the log: the list is
workflow state, not a fact about customers. What changes a profile *is* on the log: an accepted or
auto-merged pair becomes a merge request on ``patron.events`` (replayed with everything else),
so a rebuild reproduces every merge without this file. What only this file knows changes no
profile: which pairs wait for review (recomputed by every ``patron identity match``) and which an
operator rejected (so the matcher never proposes them again). It holds ids and scores only, no
names or emails: explanations are recomputed from the current profiles when listed, so erasing
a person from the profiles leaves nothing of them here.

Statuses: ``pending`` (waiting for review), ``merge_requested`` (auto-merged or accepted; the
request is on the log), ``rejected`` (an operator said "two people"), ``merged`` (the two profiles
are one now). ``triage`` is the pure part: which of a match run's pairs to merge, queue or skip.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from patron.errors import PatronError
from patron.identity.match_rules import MatchRules
from patron.identity.matching import AUTO_MERGE, ScoredPair, decision
from patron.sqlite import immediate_transaction

PENDING, MERGE_REQUESTED, REJECTED, MERGED = "pending", "merge_requested", "rejected", "merged"
STATUSES = (PENDING, MERGE_REQUESTED, REJECTED, MERGED)
MATCHER, OPERATOR = "matcher", "operator"
REVIEW_DB = "matching.db"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS pairs (
    pair_id     TEXT PRIMARY KEY,
    profile_a   TEXT NOT NULL,
    profile_b   TEXT NOT NULL,
    score       REAL NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    proposed_at TEXT NOT NULL,
    decided_at  TEXT,
    decided_by  TEXT,
    request_id  TEXT,
    reason      TEXT
)
"""


@dataclass(frozen=True, slots=True)
class PairRow:
    pair_id: str
    profile_a: str
    profile_b: str
    score: float
    status: str
    proposed_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    request_id: str | None = None
    reason: str | None = None


class ReviewStore:
    """The ``pairs`` table of ``matching.db``; every write is one immediate transaction."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[PairRow]:
        return [PairRow(*row) for row in self.db.execute(sql, args).fetchall()]

    def get(self, pair_id: str) -> PairRow:
        """The pair, or a ``PatronError`` saying how to find one."""
        rows = self._rows("SELECT * FROM pairs WHERE pair_id = ?", (pair_id.strip().lower(),))
        if not rows:
            raise PatronError(
                f"no pair {pair_id!r} in {self.path}; `patron identity review` lists the pending pairs"
            )
        return rows[0]

    def with_status(self, *statuses: str) -> list[PairRow]:
        """Pairs in any of ``statuses``, best score first (ties: pair id)."""
        marks = ", ".join("?" for _ in statuses)
        return self._rows(
            f"SELECT * FROM pairs WHERE status IN ({marks}) ORDER BY score DESC, pair_id", tuple(statuses)
        )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with immediate_transaction(self.db) as db:
            yield db

    def replace_pending(self, pairs: Iterable[ScoredPair], at: datetime) -> None:
        """Make ``pairs`` the review list: pending pairs of an earlier run that are not among them are
        dropped (nobody decided on them; a later run proposes them again if they still score)."""
        with self._write() as db:
            db.execute("DELETE FROM pairs WHERE status = ?", (PENDING,))
            db.executemany(  # a pair decided before keeps its decision (triage does not propose those)
                "INSERT INTO pairs (pair_id, profile_a, profile_b, score, status, proposed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pair_id) DO NOTHING",
                [(p.pair_id, p.a, p.b, p.score, PENDING, at.isoformat()) for p in pairs],
            )

    def mark(self, rows: Iterable[PairRow], status: str) -> None:
        """Change the status of decided pairs, keeping who decided, when and why."""
        with self._write() as db:
            db.executemany(
                "UPDATE pairs SET status = ? WHERE pair_id = ?", [(status, r.pair_id) for r in rows]
            )

    def decide(
        self,
        pair: ScoredPair | PairRow,
        status: str,
        by: str,
        at: datetime,
        *,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Record a decision on a pair (inserted if the matcher decided it without a review)."""
        a, b = (pair.a, pair.b) if isinstance(pair, ScoredPair) else (pair.profile_a, pair.profile_b)
        with self._write() as db:
            db.execute(
                "INSERT INTO pairs VALUES (:id, :a, :b, :score, :status, :at, :at, :by, :request, :reason) "
                "ON CONFLICT (pair_id) DO UPDATE SET status = excluded.status, decided_at = excluded.decided_at, "
                "decided_by = excluded.decided_by, request_id = excluded.request_id, reason = excluded.reason",
                {"id": pair.pair_id, "a": a, "b": b, "score": pair.score, "status": status,
                 "at": at.isoformat(), "by": by, "request": request_id, "reason": reason},
            )  # fmt: skip


@dataclass
class Triage:
    """What to do with one match run's pairs."""

    merge: list[ScoredPair] = field(default_factory=list)
    """At or above auto_merge and undecided: merge requests to append."""
    review: list[ScoredPair] = field(default_factory=list)
    """In the grey zone and undecided: the new review list."""
    rejected: int = 0
    """Proposed again but rejected by an operator before: skipped."""
    requested: int = 0
    """A merge is already requested for the two profiles (waiting for `patron run`): skipped."""
    now_merged: list[PairRow] = field(default_factory=list)
    """Earlier merge requests whose two profiles are one profile now."""


def triage(
    pairs: Iterable[ScoredPair], decided: Iterable[PairRow], live_of: Callable[[str], str], rules: MatchRules
) -> Triage:
    """Split a run's pairs (each at least the review threshold) by the decisions already taken.

    Decisions are remembered for the *people*, not the profile ids: a rejected pair (A, B) also
    covers (C, B) after A was merged into C, because ``live_of`` maps every profile id to the live
    profile it ended up in.
    """
    out = Triage()
    refused: set[frozenset[str]] = set()
    requested: set[frozenset[str]] = set()
    for row in decided:
        live = frozenset((live_of(row.profile_a), live_of(row.profile_b)))
        if row.status == REJECTED:
            refused.add(live)
        elif row.status == MERGE_REQUESTED:
            if len(live) == 1:
                out.now_merged.append(row)
            else:
                requested.add(live)
    for pair in pairs:
        key = frozenset((pair.a, pair.b))
        if key in refused:
            out.rejected += 1
        elif key in requested:
            out.requested += 1
        elif decision(pair.score, rules) == AUTO_MERGE:
            out.merge.append(pair)
        else:
            out.review.append(pair)
    return out
