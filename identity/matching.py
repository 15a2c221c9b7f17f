"""Probabilistic duplicate detection: scored candidate pairs of profiles that share no identifier.

Pure: records in, scored pairs out, the same for the same input (records are sorted by id, pairs
by score then pair id). How a pair is scored (Fellegi-Sunter): each field both records know is
compared with a similarity in [0, 1] (Jaro-Winkler for names and cities, word sets for companies
and titles, edit distance for digits and dates); the similarity maps to points between the
field's disagreement weight log2((1-m)/(1-u)) and agreement weight log2(m/u) (see
``match_rules.Weight``), and the pair's score is the sum: the log2 likelihood ratio of "one
person" against "two people". Every field's contribution is kept, so a reviewer sees why.

Which pairs are scored at all is the job of ``blocking``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler, Levenshtein

from patron.identity.blocking import candidate_pairs
from patron.identity.companies import company_similarity
from patron.identity.match_records import MatchRecord, Prepared, prepare
from patron.identity.match_rules import MatchRules
from patron.identity.text import digits

AUTO_MERGE = "auto_merge"
REVIEW = "review"
Progress = Callable[[str, int, int], None]
"""(what is being done, done so far, total) — drives a progress bar."""
PROGRESS_EVERY = 5000
SWAPPED = "(swapped)"
SWAP_MARGIN = 0.3
"""How much better (sum of two Jaro-Winkler similarities) the crossed names must fit to be taken as swapped."""


@dataclass(frozen=True, slots=True)
class FieldScore:
    """One line of a pair's explanation: the values compared, their similarity and the points it gave."""

    field: str
    a: str
    b: str
    similarity: float
    points: float


@dataclass(frozen=True, slots=True)
class ScoredPair:
    """Two records (``a`` < ``b`` by id), their score and its explanation."""

    pair_id: str
    a: str
    b: str
    score: float
    fields: tuple[FieldScore, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pair_id": self.pair_id,
            "a": self.a,
            "b": self.b,
            "score": round(self.score, 3),
            "fields": [
                {
                    "field": f.field,
                    "a": f.a,
                    "b": f.b,
                    "similarity": round(f.similarity, 3),
                    "points": round(f.points, 3),
                }
                for f in self.fields
            ],
        }


def pair_id(a: str, b: str) -> str:
    """A short, stable id of an unordered pair of record ids (what an operator types to decide it)."""
    low, high = sorted((a, b))
    return hashlib.blake2b(f"{low}|{high}".encode(), digest_size=6).hexdigest()


# -- comparators: (prepared a, prepared b, rules) -> (similarity, shown a, shown b) or None ------------
Comparison = tuple[float, str, str] | None


def _given(a: Prepared, b: Prepared, rules: MatchRules) -> Comparison:
    x, y = a.first_name, b.first_name
    if not x or not y:
        return None
    if len(x) == 1 or len(y) == 1:  # an initial: 'J.' is as far as 'John' can be checked
        similarity = rules.initial_similarity if x[0] == y[0] else 0.0
    else:
        similarity = JaroWinkler.normalized_similarity(x, y)
    return similarity, a.record.first_name or "", b.record.first_name or ""


def _plain(
    name: str, similarity: Callable[[str, str], float]
) -> Callable[[Prepared, Prepared, MatchRules], Comparison]:
    def compare(a: Prepared, b: Prepared, rules: MatchRules) -> Comparison:
        x, y = getattr(a, name), getattr(b, name)
        if not x or not y:
            return None
        return similarity(x, y), getattr(a.record, name) or "", getattr(b.record, name) or ""

    return compare


def _best(pairs: Iterable[tuple[float, str, str]]) -> Comparison:
    """The most similar of several value pairs (profiles hold several emails and phones)."""
    return max(pairs, key=lambda item: item[0], default=None)


def _local_part_similarity(x: str, y: str) -> float:
    """Jaro-Winkler of two local parts, except that different numbers in both mean different mailboxes:
    'john_y920' and 'john_y925' are two people as surely as two phone numbers are."""
    numbers_x, numbers_y = digits(x), digits(y)
    if numbers_x and numbers_y and numbers_x != numbers_y:
        return 0.0
    return JaroWinkler.normalized_similarity(x, y)


def _email(a: Prepared, b: Prepared, rules: MatchRules) -> Comparison:
    if not a.email or not b.email:
        return None
    return _best(
        (1.0 if whole_a == whole_b else _local_part_similarity(local_a, local_b), shown_a, shown_b)
        for (whole_a, local_a), shown_a in zip(a.email, a.record.emails, strict=True)
        for (whole_b, local_b), shown_b in zip(b.email, b.record.emails, strict=True)
        if local_a and local_b
    )


def _phone(a: Prepared, b: Prepared, rules: MatchRules) -> Comparison:
    if not a.phone or not b.phone:
        return None
    return _best((Levenshtein.normalized_similarity(x, y), x, y) for x in a.phone for y in b.phone if x and y)


def _equal(x: str, y: str) -> float:
    return 1.0 if x == y else 0.0


def _words(x: str, y: str) -> float:
    return fuzz.token_set_ratio(x, y) / 100.0


def _street(x: str, y: str) -> float:
    return fuzz.token_sort_ratio(x, y) / 100.0


COMPARATORS: dict[str, Callable[[Prepared, Prepared, MatchRules], Comparison]] = {
    "first_name": _given,
    "last_name": _plain("last_name", JaroWinkler.normalized_similarity),
    "company": _plain("company", company_similarity),
    "title": _plain("title", _words),
    "email": _email,
    "phone": _phone,
    "address": _plain("address", _street),
    "city": _plain("city", JaroWinkler.normalized_similarity),
    "postcode": _plain("postcode", OSA.normalized_similarity),
    "region": _plain("region", _equal),
    "country": _plain("country", _equal),
    "birthday": _plain("birthday", OSA.normalized_similarity),
}


def _name_sum(x_first: str, x_last: str, y_first: str, y_last: str) -> float:
    return JaroWinkler.normalized_similarity(x_first, y_first) + JaroWinkler.normalized_similarity(
        x_last, y_last
    )


def _swapped(b: Prepared) -> Prepared:
    """``b`` with given and family name exchanged (shown with a note, so the explanation stays honest)."""
    record = replace(
        b.record,
        first_name=f"{b.record.last_name} {SWAPPED}",
        last_name=f"{b.record.first_name} {SWAPPED}",
    )
    return replace(b, record=record, first_name=b.last_name, last_name=b.first_name)


def _names_in_order(a: Prepared, b: Prepared) -> Prepared:
    """``b``, with its names exchanged when that fits ``a`` clearly better ('Smith John' in a form's
    given-name box): order is a data-entry accident, not evidence of another person."""
    if not (a.first_name and a.last_name and b.first_name and b.last_name):
        return b
    straight = _name_sum(a.first_name, a.last_name, b.first_name, b.last_name)
    crossed = _name_sum(a.first_name, a.last_name, b.last_name, b.first_name)
    return _swapped(b) if crossed > straight + SWAP_MARGIN else b


Line = tuple[str, str, str, float, float]
"""(field, shown a, shown b, similarity, points): a ``FieldScore`` before it is built (most pairs are
scored only to be dropped, so their explanations stay plain tuples)."""


def _score(a: Prepared, b: Prepared, rules: MatchRules) -> tuple[Prepared, Prepared, float, list[Line]]:
    """(a, b) ordered by id, the total and the explanation lines; fields either record lacks are left out."""
    if b.record.record_id < a.record.record_id:
        a, b = b, a
    b = _names_in_order(a, b)
    lines = []
    total = 0.0
    for name, weight in rules.weights.items():
        compared = COMPARATORS[name](a, b, rules)
        if compared is None:
            continue
        similarity, shown_a, shown_b = compared
        points = weight.points(similarity)
        total += points
        lines.append((name, shown_a, shown_b, similarity, points))
    return a, b, total, lines


def _scored(a: Prepared, b: Prepared, total: float, lines: list[Line]) -> ScoredPair:
    ida, idb = a.record.record_id, b.record.record_id
    return ScoredPair(pair_id(ida, idb), ida, idb, total, tuple(FieldScore(*line) for line in lines))


def score_pair(a: Prepared, b: Prepared, rules: MatchRules) -> ScoredPair:
    """Score two prepared records, with the per-field explanation."""
    return _scored(*_score(a, b, rules))


def decision(score: float, rules: MatchRules) -> str | None:
    """``auto_merge``, ``review`` or None (not a candidate) for a score under the rules' thresholds."""
    if score >= rules.thresholds.auto_merge:
        return AUTO_MERGE
    if score >= rules.thresholds.review:
        return REVIEW
    return None


@dataclass
class MatchReport:
    """What one matching pass saw and found."""

    records: int
    compared: int
    """Candidate pairs blocking produced (each scored)."""
    blocks: int
    skipped_blocks: list[tuple[str, int]] = field(default_factory=list)
    pairs: list[ScoredPair] = field(default_factory=list)
    """Pairs scoring at least the review threshold, best first (ties: pair id)."""


def find_pairs(
    records: Iterable[MatchRecord], rules: MatchRules, progress: Progress | None = None
) -> MatchReport:
    """Block, score every candidate pair, keep those at or above the review threshold."""
    prepared = [prepare(record) for record in sorted(records, key=lambda r: r.record_id)]
    blocked = candidate_pairs(prepared, rules.blocking)
    total = len(blocked.pairs)
    found = []
    floor = rules.thresholds.review
    for done, (i, j) in enumerate(blocked.pairs, 1):
        a, b, score, lines = _score(prepared[i], prepared[j], rules)
        if score >= floor:
            found.append(_scored(a, b, score, lines))
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            progress("scoring pairs", done, total)
    found.sort(key=lambda pair: (-pair.score, pair.pair_id))
    return MatchReport(len(prepared), total, blocked.blocks, blocked.skipped, found)
