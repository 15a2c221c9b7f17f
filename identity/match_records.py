"""What the matcher compares: one record per profile (or per row of a labelled data set), folded once.

``MatchRecord`` holds values as the sources wrote them, for explanations an operator reads;
``prepare`` folds them (case, accents, punctuation, legal forms, name order) into ``Prepared``,
which blocking and scoring use. ``record_from_summary`` is the adapter from a unified profile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

from patron.identity.companies import normalise_company
from patron.identity.match_rules import MatchRules
from patron.identity.text import digits, email_local, fold, split_name

# Everyday abbreviations of street types, so '12 Chave Street' and '12 chave st' compare equal.
STREET_WORDS = {
    "street": "st",
    "strasse": "str",
    "road": "rd",
    "avenue": "ave",
    "drive": "dr",
    "place": "pl",
    "court": "ct",
    "crescent": "cres",
    "circuit": "cct",
    "close": "cl",
    "lane": "ln",
    "terrace": "tce",
    "parade": "pde",
    "highway": "hwy",
    "boulevard": "blvd",
}


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """One profile's comparable values as sent (None: unknown)."""

    record_id: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    title: str | None = None
    address: str | None = None
    city: str | None = None
    postcode: str | None = None
    region: str | None = None
    country: str | None = None
    birthday: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record's values folded for comparison; '' / () where unknown."""

    record: MatchRecord
    first_name: str
    last_name: str
    company: str
    title: str
    address: str
    city: str
    postcode: str
    region: str
    country: str
    birthday: str
    email: tuple[tuple[str, str], ...]
    """(whole address lower-cased, comparable local part) per email."""
    phone: tuple[str, ...]
    """Digits of each phone number ('' for one without digits)."""


def _street(text: str | None) -> str:
    return " ".join(STREET_WORDS.get(word, word) for word in fold(text).split())


def prepare(record: MatchRecord) -> Prepared:
    return Prepared(
        record=record,
        first_name=fold(record.first_name),
        last_name=fold(record.last_name),
        company=normalise_company(record.company),
        title=fold(record.title),
        address=_street(record.address),
        city=fold(record.city),
        postcode=fold(record.postcode).replace(" ", ""),
        region=fold(record.region),
        country=fold(record.country),
        birthday=digits(record.birthday)[:8],
        email=tuple((email.strip().lower(), email_local(email)) for email in record.emails),
        phone=tuple(digits(phone) for phone in record.phones),
    )


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


TEXT_FIELDS = tuple(f.name for f in fields(MatchRecord) if f.name not in ("record_id", "emails", "phones"))


def record_from_summary(view: dict[str, Any], rules: MatchRules) -> MatchRecord:
    """The record of a profile ``summary`` (``projections.profiles.summary``): traits named by
    ``rules.traits``, emails and phones from its identifiers. A full name fills in a missing
    first or last name ('Smith, John' and 'J. Smith' are split the way sources write them)."""
    traits = view["traits"]

    def trait(field_name: str) -> str | None:
        for name in rules.traits.get(field_name, (field_name,)):
            entry = traits.get(name)
            if entry is not None and (text := _text(entry["value"])) is not None:
                return text
        return None

    values = {name: trait(name) for name in TEXT_FIELDS}
    if values["first_name"] is None or values["last_name"] is None:
        first, last = split_name(trait("name"))
        values["first_name"] = values["first_name"] or first or None
        values["last_name"] = values["last_name"] or last or None
    identifiers = view["identifiers"]
    return MatchRecord(
        record_id=view["profile_id"],
        emails=tuple(identifiers.get("email", ())),
        phones=tuple(identifiers.get("phone", ())),
        **values,
    )
