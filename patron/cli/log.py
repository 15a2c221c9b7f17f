"""``patron log``: look into the event log and copy it: topics, counts, the latest events, replay.

Every command works on whichever backend ``--broker`` selects (the embedded log or Kafka) and
decodes with the configured schema registry. A record that does not decode (unknown schema id,
corrupt bytes) never stops a command: it is reported as one line naming its position, counted in
the summary, and skipped, so one bad record cannot hide the millions of good ones around it.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.progress import Progress, TimeRemainingColumn
from rich.table import Table

from patron.cli.output import console, err_console, parse_time, settings_of, transient_progress
from patron.config import ConfigError, Settings
from patron.errors import EXIT_INVALID, PatronError, Unavailable
from patron.events.codec import EventCodec, WireFormatError, open_codec
from patron.schemas.catalogue import Catalogue, UnknownEventType
from patron.streams.backends import open_log
from patron.streams.log import EVENTS_TOPIC, EventLog, Message, Record

app = typer.Typer(help="Inspect and replay the event log.", no_args_is_help=True)

FOLLOW_INTERVAL_S = 0.5
REPLAY_BATCH = 1000
READ_BATCH = 5000


class GroupBy(StrEnum):
    """What `patron log count --by` groups the totals by."""

    type = "type"
    source = "source"
    partition = "partition"


class Decoder:
    """Decodes records for a command, reporting and counting the ones that cannot be decoded."""

    def __init__(self, codec: EventCodec):
        self.codec = codec
        self.failed = 0

    def event_type(self, record: Record) -> str | None:
        """The record's event type from its schema id alone; None (reported) when it has none."""
        try:
            return self.codec.event_type_of(record.value)
        except Unavailable:  # the registry is down: no record would decode, stop with one line
            raise
        except Exception as exc:  # corrupt bytes fail in many ways; each is reported, none is fatal
            return self._failed(record, exc)

    def event(self, record: Record) -> dict[str, Any] | None:
        """The decoded event; None (reported) when the record does not decode."""
        try:
            return self.codec.decode(record.value)
        except Unavailable:
            raise
        except Exception as exc:  # as above: report, count, go on
            return self._failed(record, exc)

    def _failed(self, record: Record, exc: Exception) -> None:
        self.failed += 1
        if isinstance(exc, KeyError | WireFormatError | PatronError):
            reason = exc.args[0] if exc.args else str(exc)
        else:
            reason = f"corrupt Avro body ({type(exc).__name__}: {exc})"
        err_console.print(
            f"[yellow]skipped[/] {record.topic} partition {record.partition} offset {record.offset}: "
            f"cannot decode: {escape(str(reason))}",
            highlight=False,
            soft_wrap=True,
        )


@contextmanager
def _session(ctx: typer.Context) -> Iterator[tuple[Settings, EventLog, Decoder]]:
    """The log and decoder the global options select, the log closed (flushed) at the end."""
    settings = settings_of(ctx)
    log = open_log(settings)
    try:
        yield settings, log, Decoder(open_codec(settings))
    finally:
        log.close()


def _existing_ends(log: EventLog, topic: str, settings: Settings) -> dict[int, int]:
    """End offsets of ``topic``, which must exist: a typo should not read as an empty log."""
    if topic not in log.topics():
        raise PatronError(
            f"topic {topic!r} does not exist on {settings.broker}; `patron log topics` lists the topics there",
            EXIT_INVALID,
        )
    return log.end_offsets(topic)


def _records(log: EventLog, topic: str, partition: int, start: int, stop: int) -> Iterator[Record]:
    """Records of one partition with offsets in ``[start, stop)``, in order."""
    offset = start
    while offset < stop:
        batch = log.read(topic, partition, offset, min(READ_BATCH, stop - offset))
        if not batch:
            return
        yield from (r for r in batch if r.offset < stop)
        offset = batch[-1].offset + 1


@contextmanager
def _progress(description: str, total: int) -> Iterator[Progress]:
    progress = transient_progress("{task.description}", TimeRemainingColumn())
    with progress:
        progress.add_task(description, total=total)
        yield progress


def _scan(log: EventLog, topic: str, ends: dict[int, int], description: str) -> Iterator[Record]:
    """Every record below ``ends``, partition by partition in offset order, with a progress bar."""
    with _progress(description, sum(ends.values())) as progress:
        (task,) = progress.task_ids
        for partition, end in sorted(ends.items()):
            for record in _records(log, topic, partition, 0, end):
                yield record
                progress.advance(task)


def _check_types(types: list[str] | None, catalogue: Catalogue) -> set[str]:
    """The requested event types, each checked against the catalogue (with a did-you-mean)."""
    for event_type in types or ():
        try:
            catalogue.get(event_type)
        except UnknownEventType as exc:
            raise PatronError(f"--type: {exc}", EXIT_INVALID) from None
    return set(types or ())


def _parse_time(value: str | None, option: str) -> int | None:
    """An ISO 8601 time as epoch milliseconds (naive times are UTC)."""
    return None if value is None else int(parse_time(value, option).timestamp() * 1000)


def _json_line(event: dict[str, Any]) -> bytes:
    """One event as a JSON line; datetimes and dates in ISO 8601."""
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


# -- topics ------------------------------------------------------------------------------------
@app.command("topics")
def topics(ctx: typer.Context) -> None:
    """List the topics with their partition and record counts."""
    with _session(ctx) as (settings, log, _):
        found = log.topics()
        if not found:
            console.print(f"no topics yet on {settings.broker}", highlight=False, soft_wrap=True)
            return
        table = Table(title=f"topics on {settings.broker}")
        table.add_column("topic")
        table.add_column("partitions", justify="right")
        table.add_column("records", justify="right")
        for name, partitions in found.items():
            table.add_row(name, str(partitions), f"{sum(log.end_offsets(name).values()):,}")
        console.print(table)


# -- count -------------------------------------------------------------------------------------
@app.command("count")
def count(
    ctx: typer.Context,
    topic: str = typer.Option(EVENTS_TOPIC, "--topic", help="Topic to count."),
    by: GroupBy = typer.Option(
        GroupBy.type, "--by", help="Group the totals by event type, source or partition."
    ),
) -> None:
    """Count the records of a topic, grouped by event type, source or partition."""
    with _session(ctx) as (settings, log, decoder):
        ends = _existing_ends(log, topic, settings)
        counts: Counter[str] = Counter()
        if by is GroupBy.partition:
            counts.update({str(partition): end for partition, end in ends.items()})
        else:
            for record in _scan(log, topic, ends, f"counting {topic}"):
                if by is GroupBy.type:
                    group = decoder.event_type(record)
                else:
                    event = decoder.event(record)
                    group = None if event is None else event["envelope"]["source"]
                if group is not None:
                    counts[group] += 1
        _print_counts(f"{topic} on {settings.broker}", by.value, counts, decoder.failed)


def _print_counts(title: str, by: str, counts: Counter[str], undecodable: int) -> None:
    total = sum(counts.values()) + undecodable
    table = Table(title=title, show_footer=True)
    table.add_column(by, footer="total")
    table.add_column("records", justify="right", footer=f"{total:,}")
    table.add_column("share", justify="right")
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if undecodable:
        rows.append(("(undecodable)", undecodable))
    for group, n in rows:
        table.add_row(group, f"{n:,}", f"{n / total:.1%}")
    console.print(table)


# -- tail --------------------------------------------------------------------------------------
@app.command("tail")
def tail(
    ctx: typer.Context,
    lines: int = typer.Option(10, "-n", "--lines", min=0, help="How many of the latest events to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until Ctrl-C."),
    types: list[str] = typer.Option(None, "--type", "-t", help="Only events of this type (repeatable)."),
    topic: str = typer.Option(EVENTS_TOPIC, "--topic", help="Topic to read."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Show the latest events of a topic, newest last, by event time."""
    with _session(ctx) as (settings, log, decoder):
        wanted = _check_types(types, decoder.codec.catalogue)
        ends = _existing_ends(log, topic, settings)
        printer = _TailPrinter(decoder, as_json)
        printer.emit(_latest(log, decoder, topic, ends, lines, wanted))
        if follow:
            _follow(log, decoder, topic, ends, wanted, printer)


def _matches(decoder: Decoder, record: Record, wanted: set[str]) -> bool:
    if not wanted:
        return True
    return decoder.event_type(record) in wanted


def _latest(
    log: EventLog, decoder: Decoder, topic: str, ends: dict[int, int], n: int, wanted: set[str]
) -> list[Record]:
    """The ``n`` matching records with the latest event times, found by reading each partition backwards."""
    if n == 0:
        return []
    candidates: list[Record] = []
    window = max(2 * n, 256)
    for partition, end in ends.items():
        found: list[Record] = []
        stop = end
        while stop > 0 and len(found) < n:
            start = max(0, stop - window)
            chunk = [r for r in _records(log, topic, partition, start, stop) if _matches(decoder, r, wanted)]
            found = chunk + found
            stop = start
        candidates.extend(found[-n:])
    return sorted(heapq.nlargest(n, candidates, key=_event_order), key=_event_order)


def _event_order(record: Record) -> tuple[int, int, int]:
    return record.timestamp_ms, record.partition, record.offset


def _follow(
    log: EventLog, decoder: Decoder, topic: str, ends: dict[int, int], wanted: set[str], printer: _TailPrinter
) -> None:
    """Poll for records past the last seen end offsets and print them, until interrupted."""
    positions = dict(ends)
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL_S)
            fresh: list[Record] = []
            for partition, end in log.end_offsets(topic).items():
                start = positions.get(partition, 0)
                fresh.extend(
                    r for r in _records(log, topic, partition, start, end) if _matches(decoder, r, wanted)
                )
                positions[partition] = max(start, end)
            printer.emit(sorted(fresh, key=_event_order))
    except KeyboardInterrupt:
        return


class _TailPrinter:
    """Prints events as JSON lines or as a compact table (header once, so follow mode lines up)."""

    WIDTHS = (25, 18, 12, 12)

    def __init__(self, decoder: Decoder, as_json: bool):
        self.decoder = decoder
        self.as_json = as_json
        self._header_done = False

    def emit(self, records: list[Record]) -> None:
        for record in records:
            event = self.decoder.event(record)
            if event is None:
                continue
            if self.as_json:
                typer.echo(_json_line(event), nl=False)
            else:
                self._row(record, event)

    def _row(self, record: Record, event: dict[str, Any]) -> None:
        if not self._header_done:
            typer.echo(self._line("occurred_at", "type", "source", "position", "payload"))
            self._header_done = True
        envelope = event["envelope"]
        occurred: datetime = envelope["occurred_at"]
        typer.echo(
            self._line(
                occurred.isoformat(timespec="seconds"),
                envelope["event_type"],
                envelope["source"],
                f"{record.partition}/{record.offset}",
                self._summary(envelope["event_type"], event["payload"]),
            )
        )

    def _line(self, *cells: str) -> str:
        fixed = "  ".join(cell.ljust(width) for cell, width in zip(cells, self.WIDTHS, strict=False))
        return f"{fixed}  {cells[-1]}".rstrip()

    def _summary(self, event_type: str, payload: dict[str, Any]) -> str:
        """Set, non-personal scalar payload fields: enough to recognise an event, no PII on screen."""
        pii = set(self.decoder.codec.catalogue.get(event_type).pii_fields)
        parts = [
            f"{name}={value}"
            for name, value in payload.items()
            if value is not None and not isinstance(value, dict | list) and f"payload.{name}" not in pii
        ]
        text = " ".join(parts)
        return text if len(text) <= 80 else text[:79] + "…"


# -- replay ------------------------------------------------------------------------------------
@app.command("replay")
def replay(
    ctx: typer.Context,
    topic: str = typer.Option(EVENTS_TOPIC, "--topic", help="Topic to replay."),
    since: str = typer.Option(
        None, "--since", help="Only events that occurred at or after this ISO 8601 time."
    ),
    until: str = typer.Option(None, "--until", help="Only events that occurred before this ISO 8601 time."),
    types: list[str] = typer.Option(None, "--type", "-t", help="Only events of this type (repeatable)."),
    to: str = typer.Option(None, "--to", help="Append to this log, e.g. kafka://HOST:PORT or local://DIR."),
    out: Path = typer.Option(None, "--out", help="Write the decoded events to this JSON-lines file."),
) -> None:
    """Re-read a topic in per-partition order into another log (``--to``) or a JSONL file (``--out``).

    Replaying into a log is idempotent: event ids are preserved and ids already in the target topic
    are skipped, so running it again adds nothing. Records are copied byte for byte, so the target
    is read with this data directory's schema registry (``--data-dir`` here, ``--broker`` the target).
    """
    if (to is None) == (out is None):
        raise PatronError(
            "replay needs exactly one destination: --to BROKER_URL or --out FILE.jsonl", EXIT_INVALID
        )
    since_ms, until_ms = _parse_time(since, "--since"), _parse_time(until, "--until")
    with _session(ctx) as (settings, log, decoder):
        wanted = _check_types(types, decoder.codec.catalogue)
        ends = _existing_ends(log, topic, settings)
        stats = Counter[str]()

        def selected() -> Iterator[tuple[Record, dict[str, Any]]]:
            """Records in the time range and of the wanted types, with their decoded events."""
            for record in _scan(log, topic, ends, f"replaying {topic}"):
                stats["read"] += 1
                in_range = (since_ms is None or record.timestamp_ms >= since_ms) and (
                    until_ms is None or record.timestamp_ms < until_ms
                )
                if not in_range or (wanted and decoder.event_type(record) not in wanted):
                    stats["filtered out"] += 1
                    continue
                event = decoder.event(record)
                if event is not None:
                    yield record, event

        if out is not None:
            destination = str(out)
            _replay_to_file(selected(), out, stats)
        else:
            target_settings = _target_settings(settings, to)
            destination = f"{target_settings.broker} topic {topic}"
            _replay_to_log(selected(), target_settings, topic, len(ends), stats)
        stats["undecodable"] = decoder.failed
        summary = ", ".join(
            f"{name} {stats[name]:,}"
            for name in ("read", "written", "duplicates", "filtered out", "undecodable")
        )
        console.print(f"replayed {topic} to {destination}: {summary}", highlight=False, soft_wrap=True)


def _target_settings(source: Settings, url: str) -> Settings:
    """Settings for the replay target: its broker, everything else (registry, partitions) shared."""
    try:
        target = Settings.load(
            data_dir=source.data_dir, broker=url, registry=source.registry_url, partitions=source.partitions
        )
    except ConfigError as exc:
        raise PatronError(f"--to: {exc}", EXIT_INVALID) from None
    if _log_identity(target) == _log_identity(source):
        raise PatronError(f"--to {url} is the log being replayed; name another log", EXIT_INVALID)
    return target


def _log_identity(settings: Settings) -> str:
    broker = settings.broker
    return str(Path(broker.location).resolve()) if broker.scheme == "local" else str(broker)


def _replay_to_file(events: Iterator[tuple[Record, dict[str, Any]]], out: Path, stats: Counter[str]) -> None:
    try:
        with out.open("wb") as sink:
            for _, event in events:
                sink.write(_json_line(event))
                stats["written"] += 1
    except OSError as exc:
        raise PatronError(f"cannot write {out}: {exc.strerror or exc}", EXIT_INVALID) from None


def _replay_to_log(
    events: Iterator[tuple[Record, dict[str, Any]]],
    target_settings: Settings,
    topic: str,
    partitions: int,
    stats: Counter[str],
) -> None:
    """Append the records byte for byte (same schema ids: both sides share the registry).

    A Kafka target cannot tell a re-sent event from a new one across processes, so the ids already
    in the target topic are read first and skipped; that is what makes a second replay add nothing.
    """
    target = open_log(target_settings)
    try:
        if target.ensure_topic(topic, partitions) != partitions:
            err_console.print(
                f"[yellow]note[/] {topic} has a different partition count on {target_settings.broker}: "
                "records keep their per-key order but land in other partitions",
                highlight=False,
                soft_wrap=True,
            )
        present = {
            r.event_id
            for r in _scan(target, topic, target.end_offsets(topic), "reading ids in the target")
            if r.event_id is not None
        }
        batch: list[Message] = []
        for record, _ in events:
            if record.event_id is not None:
                if record.event_id in present:
                    stats["duplicates"] += 1
                    continue
                present.add(record.event_id)
            batch.append(Message(record.key, record.event_id, record.value, record.timestamp_ms))
            if len(batch) >= REPLAY_BATCH:
                _append(target, topic, batch, stats)
        _append(target, topic, batch, stats)
    finally:
        target.close()


def _append(target: EventLog, topic: str, batch: list[Message], stats: Counter[str]) -> None:
    result = target.append(topic, batch)
    stats["written"] += result.appended
    stats["duplicates"] += result.duplicates
    batch.clear()
