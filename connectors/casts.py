"""Explicit casts a mapping asks for with ``type:``: a raw column value becomes a typed value.

Files carry text (CSV), JSON values (JSONL) or Arrow values (Parquet); a cast accepts all
three, so one mapping works whichever format a source exports. A value that does not fit
raises :class:`CastError` with what was expected: the caller turns it into that one
record's rejection reason, never into an exception that stops the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from typing import Any

import orjson

CAST_TYPES = ("string", "int", "float", "bool", "timestamp", "date", "json")
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})
# Epoch numbers at least this large are milliseconds: as seconds they would be after the year 5000.
EPOCH_MILLIS_FROM = 100_000_000_000

Cast = Callable[[Any], Any]


class CastError(ValueError):
    """A value that does not fit the requested type; the message says what was expected."""


def to_string(value: Any) -> str:
    """Text as is; numbers and times as their usual text; lists and objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def to_int(value: Any) -> int:
    """Whole numbers; ``"3.0"`` is fine, ``"3.5"`` is not (silently truncating would change the data)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    number = _number(value, "a whole number")
    if not number.is_integer():
        raise CastError(f"{_short(value)} is not a whole number")
    return int(number)


def to_float(value: Any) -> float:
    """Finite decimal numbers (``"12.5"``, ``"1e3"``); NaN and infinity are refused."""
    if isinstance(value, bool):
        return float(value)
    return _number(value, "a number")


def _number(value: Any, expected: str) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise CastError(f"{_short(value)} is not {expected}") from None
    if not math.isfinite(number):
        raise CastError(f"{_short(value)} is not {expected} (not finite)")
    return number


def to_bool(value: Any) -> bool:
    """true/false, yes/no, y/n, t/f, on/off and 1/0, in any letter case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CastError(f"{_short(value)} is not a boolean (use true/false, yes/no or 1/0)")


def to_timestamp(value: Any, fmt: str | None, zone: tzinfo) -> datetime:
    """An aware UTC datetime; a time without offset is read in the mapping's ``zone``.

    Without ``fmt`` ISO 8601 text and epoch seconds or milliseconds are accepted.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return _from_epoch(value)
    else:
        text = str(value).strip()
        if fmt:
            try:
                moment = datetime.strptime(text, fmt)
            except ValueError:
                raise CastError(f"{_short(value)} does not match the timestamp format {fmt!r}") from None
        else:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                try:
                    return _from_epoch(float(text))
                except (ValueError, CastError):
                    raise CastError(
                        f"{_short(value)} is not a timestamp (expected ISO 8601 such as 2024-05-17T09:30:00Z, "
                        "epoch seconds or milliseconds, or set `format:` in the mapping)"
                    ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is valid ISO 8601 but before year 1 in UTC
        raise CastError(f"{_short(value)} is out of range once converted to UTC") from None


def _from_epoch(number: float) -> datetime:
    if not math.isfinite(number):
        raise CastError(f"{number!r} is not an epoch time")
    seconds = number / 1000 if abs(number) >= EPOCH_MILLIS_FROM else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise CastError(f"{number!r} is out of range for an epoch time") from None


def to_date(value: Any, fmt: str | None) -> date:
    """A calendar date: ISO ``2024-05-17`` (or a timestamp's date) unless ``fmt`` says otherwise."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if fmt:
            return datetime.strptime(text, fmt).date()
        try:
            return date.fromisoformat(text)
        except ValueError:
            return datetime.fromisoformat(text).date()
    except ValueError:
        expected = f"the date format {fmt!r}" if fmt else "an ISO 8601 date such as 2024-05-17"
        raise CastError(f"{_short(value)} does not match {expected}") from None


def to_json(value: Any) -> Any:
    """JSON text parsed into lists/objects; values that are already structured pass through."""
    if not isinstance(value, str | bytes):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise CastError(f"{_short(value)} is not valid JSON ({exc})") from None


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def make_cast(type_name: str, fmt: str | None, zone: tzinfo) -> Cast:
    """The cast for a field spec's ``type`` (one of :data:`CAST_TYPES`)."""
    if type_name == "timestamp":
        return lambda value: to_timestamp(value, fmt, zone)
    if type_name == "date":
        return lambda value: to_date(value, fmt)
    simple: dict[str, Cast] = {
        "string": to_string,
        "int": to_int,
        "float": to_float,
        "bool": to_bool,
        "json": to_json,
    }
    return simple[type_name]
