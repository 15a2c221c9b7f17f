"""Blocking: which record pairs are worth scoring at all.

Scoring every pair of n profiles is n²/2 comparisons (50 billion for 300,000 profiles). Two records
of one person nearly always share *something* exact after normalisation: the sound of the family
name, the email's local part, the phone's last digits, the date of birth. Each such key puts the
records holding it in one block, and only pairs within a block are scored. Several key families
make the blocking forgiving: a typo that changes the surname's sound still leaves the given name,
the birthday or the postcode.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import jellyfish

from patron.identity.match_records import Prepared
from patron.identity.match_rules import Blocking

PHONE_SUFFIX = 7
"""Digits of the phone number's end that key a block (country and area codes vary in how they're sent)."""


def _sound(word: str) -> str:
    """Phonetic code of a (folded) name: Smith and Smyth share one."""
    return jellyfish.metaphone(word) if word else ""


def keys_of(record: Prepared, families: Sequence[str]) -> set[str]:
    """The blocking keys of one prepared record for the given key families."""
    first, last = record.first_name, record.last_name
    keys: set[str] = set()
    for family in families:
        if family == "surname" and last:
            keys.add(f"name:{_sound(last.replace(' ', ''))}:{first[:1]}")
        elif family == "given" and len(first) > 1:
            keys.add(f"name:{_sound(first.replace(' ', ''))}:{last[:1]}")
        elif family == "company" and record.company:
            keys.add(f"company:{record.company}:{last[:1]}")
        elif family == "email":
            keys.update(f"email:{local}" for _, local in record.email if local)
        elif family == "phone":
            keys.update(
                f"phone:{number[-PHONE_SUFFIX:]}" for number in record.phone if len(number) >= PHONE_SUFFIX
            )
        elif family == "birthday" and record.birthday:
            keys.add(f"birthday:{record.birthday}")
        elif family == "postcode" and record.postcode and record.birthday:
            keys.add(f"postcode:{record.postcode}:{record.birthday[:4]}")
    return keys


@dataclass
class BlockingResult:
    """Candidate pairs (index pairs ``i < j``, sorted) and the blocks too large to expand."""

    pairs: list[tuple[int, int]]
    blocks: int
    skipped: list[tuple[str, int]] = field(default_factory=list)
    """(key, records) of every block over ``max_block_size``, largest first."""


def candidate_pairs(records: Iterable[Prepared], blocking: Blocking) -> BlockingResult:
    """Every pair of records sharing a blocking key, each pair once."""
    blocks: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        for key in keys_of(record, blocking.keys):
            blocks[key].append(index)
    pairs: set[tuple[int, int]] = set()
    skipped = []
    used = 0
    for key, members in blocks.items():
        if len(members) < 2:
            continue
        if len(members) > blocking.max_block_size:
            skipped.append((key, len(members)))
            continue
        used += 1
        pairs.update(combinations(members, 2))  # members were appended in index order: i < j
    skipped.sort(key=lambda item: (-item[1], item[0]))
    return BlockingResult(sorted(pairs), used, skipped)
