"""Measuring the matcher on labelled data: precision, recall and F1 at the thresholds, and what blocking costs.

Thresholds and weights are only as good as their measured effect, so this runs the same blocking
and scoring as ``patron identity match`` on records whose true duplicate pairs are known (the
generator's ground truth, the FEBRL data sets) and counts. ``febrl_records`` maps FEBRL's columns
to match records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from patron.identity.blocking import candidate_pairs
from patron.identity.match_records import MatchRecord, prepare
from patron.identity.match_rules import MatchRules
from patron.identity.matching import MatchReport, Progress, find_pairs

Pair = tuple[str, str]
"""Two record ids, smaller first."""


def ordered(a: str, b: str) -> Pair:
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class Quality:
    """How the pairs at or above one threshold compare with the truth."""

    threshold: float
    predicted: int
    true_positives: int
    actual: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.actual if self.actual else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


@dataclass(frozen=True)
class Evaluation:
    records: int
    true_pairs: int
    candidate_pairs: int
    candidates_true: int
    """True pairs blocking let through (the most any threshold can find)."""
    review: Quality
    auto_merge: Quality
    report: MatchReport

    @property
    def reduction_ratio(self) -> float:
        """Share of all record pairs blocking spared from scoring."""
        total = self.records * (self.records - 1) // 2
        return 1 - self.candidate_pairs / total if total else 0.0

    @property
    def pairs_completeness(self) -> float:
        return self.candidates_true / self.true_pairs if self.true_pairs else 1.0


def evaluate(
    records: list[MatchRecord], truth: Iterable[Pair], rules: MatchRules, progress: Progress | None = None
) -> Evaluation:
    """Block and score ``records`` as ``patron identity match`` does, and count against ``truth``."""
    true_pairs = {ordered(*pair) for pair in truth}
    prepared = [prepare(record) for record in sorted(records, key=lambda r: r.record_id)]
    blocked = candidate_pairs(prepared, rules.blocking)
    ids = [p.record.record_id for p in prepared]
    candidates_true = sum(1 for i, j in blocked.pairs if (ids[i], ids[j]) in true_pairs)
    report = find_pairs(records, rules, progress)

    def quality(threshold: float) -> Quality:
        found = {(pair.a, pair.b) for pair in report.pairs if pair.score >= threshold}
        return Quality(threshold, len(found), len(found & true_pairs), len(true_pairs))

    return Evaluation(
        records=len(records),
        true_pairs=len(true_pairs),
        candidate_pairs=len(blocked.pairs),
        candidates_true=candidates_true,
        review=quality(rules.thresholds.review),
        auto_merge=quality(rules.thresholds.auto_merge),
        report=report,
    )


def _text(value: Any) -> str | None:
    """FEBRL cells as text; pandas gives NaN (a float) for empty ones."""
    if value is None or isinstance(value, float):
        return None
    text = str(value).strip()
    return text or None


def febrl_records(rows: Iterable[dict[str, Any]]) -> list[MatchRecord]:
    """FEBRL rows (``rec_id`` plus its columns) as match records.

    given_name, surname -> first/last name; street_number + address_1 -> address; suburb -> city;
    postcode; state -> region; date_of_birth -> birthday. Not used: address_2 (a building or
    estate name, mostly empty) and soc_sec_id — a national id is an identifier, which the
    deterministic stage links exactly; the matcher is for what no identifier joins.
    """
    records = []
    for row in rows:
        street = " ".join(part for part in (_text(row["street_number"]), _text(row["address_1"])) if part)
        records.append(
            MatchRecord(
                record_id=str(row["rec_id"]),
                first_name=_text(row["given_name"]),
                last_name=_text(row["surname"]),
                address=street or None,
                city=_text(row["suburb"]),
                postcode=_text(row["postcode"]),
                region=_text(row["state"]),
                birthday=_text(row["date_of_birth"]),
            )
        )
    return records
