"""PII encryption cost: encode + decode of generated events with and without the per-subject cipher.

Usage: ``.venv/bin/python bench/crypto.py [--events 20000] [--markdown]``. Both codecs encode and decode
the same events (identify, orders, page views of 2,000 customers, each with several PII fields) in
the same run; the cipher's data keys are created during a warm-up pass, as in a running pipeline where
most events belong to customers seen before.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from patron.config import Settings
from patron.events.codec import EventCodec, open_codec
from patron.events.models import validate_event
from patron.machine import describe, one_line

console = Console()
PACKAGES = ("cryptography", "fastavro")


def events(count: int) -> list[dict[str, Any]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for i in range(count):
        who = i % 2000
        at = start + timedelta(seconds=i)
        envelope = {
            "event_id": f"00000000-0000-4000-8000-{i:012d}",
            "occurred_at": at,
            "received_at": at,
            "source": "shop",
            "identifiers": {
                "user_id": f"u-{who}",
                "email": f"c{who}@example.com",
                "anonymous_id": f"a-{who}",
            },
            "context": {"ip": "203.0.113.7", "locale": "de-DE"},
        }
        kind = i % 3
        if kind == 0:
            body = {"event_type": "identify", "payload": {"first_name": f"F{who}", "last_name": f"L{who}"}}
        elif kind == 1:
            body = {
                "event_type": "order_completed",
                "payload": {"order_id": f"O-{i}", "revenue": 10.0, "currency": "EUR", "items": []},
            }
        else:
            body = {"event_type": "page_viewed", "payload": {"url": "https://example.com/"}}
        made.append(
            validate_event(
                {"envelope": {**envelope, "event_type": body["event_type"]}, "payload": body["payload"]}
            )
        )
    return made


def measure(codec: EventCodec, sample: list[dict[str, Any]]) -> tuple[float, float]:
    """(encode µs/event, decode µs/event), after one warm-up pass."""
    encoded = [codec.encode(event) for event in sample]
    for value in encoded:
        codec.decode(value)
    started = time.perf_counter()
    encoded = [codec.encode(event) for event in sample]
    middle = time.perf_counter()
    for value in encoded:
        codec.decode(value)
    done = time.perf_counter()
    return (middle - started) / len(sample) * 1e6, (done - middle) / len(sample) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    sample = events(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(data_dir=Path(tmp))
        encrypted = open_codec(settings)
        plain = EventCodec(encrypted.registry, encrypted.catalogue)
        rows = [
            ("plain (PATRON_PII_ENCRYPTION=off)", *measure(plain, sample)),
            ("encrypted", *measure(encrypted, sample)),
        ]
    base = rows[0][1] + rows[0][2]
    table = Table(title=f"encode + decode, {args.events:,} events")
    for header in ("codec", "encode µs/event", "decode µs/event", "total µs/event", "x plain"):
        table.add_column(header)
    lines = [
        (name, f"{enc:.1f}", f"{dec:.1f}", f"{enc + dec:.1f}", f"{(enc + dec) / base:.2f}")
        for name, enc, dec in rows
    ]
    for line in lines:
        table.add_row(*line)
    console.print(table)
    console.print(one_line(describe(PACKAGES)), highlight=False)
    if args.markdown:
        print(
            "| codec | encode µs/event | decode µs/event | total µs/event | x plain |\n|---|---:|---:|---:|---:|"
        )
        for line in lines:
            print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
