"""Normalisation of identifiers, so the same person's identifiers compare equal across sources.

Email: trimmed and lower-cased (then syntax-checked with email-validator); phone: E.164
via phonenumbers, with a default region for numbers written without country code;
timestamps: UTC, naive ones taken as UTC unless the caller says otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_REGION = "US"
# The same customers send many events: caching the (slow) parsers pays for itself quickly.
CACHE_SIZE = 200_000


@lru_cache(maxsize=CACHE_SIZE)
def normalize_email(value: str) -> str:
    """``"  John.Smith@ACME.com "`` -> ``"john.smith@acme.com"``; raises ValueError for a malformed address."""
    email = value.strip().lower()
    try:
        validate_email(email, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address ({exc})") from None
    return email


@lru_cache(maxsize=CACHE_SIZE)
def normalize_phone(value: str, region: str | None = None) -> str:
    """``"030 1234567"`` with region DE -> ``"+49301234567"``; raises ValueError when not a possible number."""
    try:
        number = phonenumbers.parse(value, (region or DEFAULT_REGION).upper())
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{value!r} is not a possible phone number for region {region or DEFAULT_REGION}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def to_utc(moment: datetime, assume: tzinfo = UTC) -> datetime:
    """The same instant in UTC; a naive ``moment`` is read in the ``assume`` zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=assume)
    return moment.astimezone(UTC)
