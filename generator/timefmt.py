"""Vectorised timestamp text: microseconds since the epoch -> strftime-like fixed-width strings.

Arrow's ``strftime`` and numpy's ``datetime_as_string`` take seconds per ten million values.
Every pattern the generator writes is fixed-width, and its parts depend on few distinct values
(the day, the second of the day, the millisecond, the UTC offset), so each part is rendered
once per distinct value into a small byte table and gathered row by row into the output.
Local times come from a per-hour table of UTC offsets built with :mod:`zoneinfo`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from patron.generator.textcols import digit_matrix, from_matrix, literal_matrix

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
TOKEN = re.compile(r"%[YmdHMSLz]")
# Which per-row quantity each token is a function of.
DRIVER = {"%Y": "day", "%m": "day", "%d": "day", "%H": "second", "%M": "second", "%S": "second"}
DRIVER |= {"%L": "milli", "%z": "offset"}


def civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of days since 1970-01-01 (proleptic Gregorian; Hinnant's algorithm)."""
    z = days + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def utc_offsets(us: np.ndarray, zone: str) -> np.ndarray:
    """UTC offset in minutes of ``zone`` at each instant (looked up per hour, DST included)."""
    hours = np.floor_divide(us, US_PER_HOUR)
    if len(hours) == 0:
        return np.zeros(0, dtype=np.int64)
    first, last = int(hours.min()), int(hours.max())
    tz = ZoneInfo(zone)
    table = [
        datetime.fromtimestamp(hour * 3600, UTC).astimezone(tz).utcoffset().total_seconds() // 60
        for hour in range(first, last + 1)
    ]
    return np.array(table, dtype=np.int64)[hours - first]


def _runs(pattern: str) -> list[tuple[str | None, list[str]]]:
    """Split a pattern into runs of tokens with one driver, each with the literals that follow it."""
    runs: list[tuple[str | None, list[str]]] = []
    position = 0
    for match in TOKEN.finditer(pattern):
        literal = pattern[position : match.start()]
        if literal:
            if runs:
                runs[-1][1].append(literal)
            else:
                runs.append((None, [literal]))
        driver = DRIVER[match.group()]
        if runs and runs[-1][0] == driver:
            runs[-1][1].append(match.group())
        else:
            runs.append((driver, [match.group()]))
        position = match.end()
    tail = pattern[position:]
    if tail:
        if runs:
            runs[-1][1].append(tail)
        else:
            runs.append((None, [tail]))
    return runs


def _render(piece: str, domain: np.ndarray) -> np.ndarray:
    """One token (or literal) for every value of its driver's domain, as a byte table."""
    n = len(domain)
    if not TOKEN.fullmatch(piece):
        return literal_matrix(piece, n)
    if piece == "%z":
        sign = np.where(domain < 0, ord("-"), ord("+")).astype(np.uint8)[:, None]
        size = np.abs(domain)
        return np.hstack(
            [sign, digit_matrix(size // 60, 2), literal_matrix(":", n), digit_matrix(size % 60, 2)]
        )
    if DRIVER[piece] == "day":
        year, month, day = civil(domain)
        number, width = {"%Y": (year, 4), "%m": (month, 2), "%d": (day, 2)}[piece]
        return digit_matrix(number, width)
    number, width = {
        "%H": (domain // 3600, 2),
        "%M": (domain // 60 % 60, 2),
        "%S": (domain % 60, 2),
        "%L": (domain, 3),
    }[piece]
    return digit_matrix(number, width)


def format_times(us: np.ndarray, pattern: str, zone: str | None = None) -> pa.StringArray:
    """Format instants with a fixed-width pattern.

    Tokens: ``%Y %m %d %H %M %S`` as in strftime, ``%L`` milliseconds (3 digits), ``%z`` the
    offset as ``+HH:MM``. With ``zone`` the wall-clock time of that zone is written.
    """
    us = np.asarray(us, dtype=np.int64)
    n = len(us)
    offsets = utc_offsets(us, zone) if zone else np.zeros(n, dtype=np.int64)
    local = us + offsets * (60 * US_PER_SECOND)
    seconds = np.floor_divide(local, US_PER_SECOND)
    days = np.floor_divide(seconds, 86400)
    first_day = int(days.min()) if n else 0
    drivers = {
        "day": lambda: (np.arange(first_day, int(days.max()) + 1 if n else 1), days - first_day),
        "second": lambda: (np.arange(86400), seconds - days * 86400),
        "milli": lambda: (np.arange(1000), (local - seconds * US_PER_SECOND) // 1000),
        "offset": lambda: np.unique(offsets, return_inverse=True),
        None: lambda: (np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)),
    }
    blocks = []
    for driver, pieces in _runs(pattern):
        domain, index = drivers[driver]()
        blocks.append((np.hstack([_render(piece, domain) for piece in pieces]), index))
    out = np.empty((n, sum(table.shape[1] for table, _ in blocks)), dtype=np.uint8)
    column = 0
    for table, index in blocks:
        width = table.shape[1]
        # Gathering whole rows as one opaque item is several times faster than a 2-D fancy index.
        rows = np.ascontiguousarray(table).view(np.dtype((np.void, width))).ravel()
        out[:, column : column + width] = rows[index].view(np.uint8).reshape(n, width)
        column += width
    return from_matrix(out)


def epoch(us: np.ndarray, unit_us: int) -> np.ndarray:
    """Whole epoch seconds (``unit_us=1_000_000``) or milliseconds (``1000``) of instants."""
    return np.floor_divide(np.asarray(us, dtype=np.int64), unit_us)
