"""``patron segments``: check, list, show, preview and measure segment and trigger definitions.

Definitions come from the files in ``PATRON_SEGMENTS`` (default ``<data_dir>/segments``, or
``--definitions DIR``) plus the built-in triggers, exactly as ``patron run`` / ``patron worker``
load them. Memberships come from the profiles stage's ``segments`` store: the embedded log's
state, or on Kafka the worker's changelog (``--app-id``). ``preview`` evaluates a definition *as
written now* over the current profiles without emitting anything: the way to try a change before
the runner applies it. ``size-history`` is a fold over ``patron.segment-changes``: the event
stream alone says how big a segment was at any time.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rapidfuzz import process
from rich.markup import escape
from rich.table import Table

from patron.cli.output import console, parse_time, settings_of, transient_progress
from patron.config import Settings
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import open_codec
from patron.projections.profile_processor import ProfileProcessor
from patron.projections.segments.definitions import (
    NO_CONSENT,
    Definition,
    Definitions,
    definition_files,
    load_definitions,
)
from patron.projections.segments.engine import SEGMENT_ENTERED, SEGMENT_EXITED
from patron.projections.segments.fields import TIME, Fields
from patron.projections.segments.predicates import (
    Condition,
    Leaf,
    duration_text,
    evaluate,
    leaves,
    shown,
)
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC
from patron.projections.snapshot import DEFAULT_APP_ID
from patron.streams.backends import open_log
from patron.streams.local_log import LocalLog
from patron.streams.log import EventLog, scan
from patron.streams.state import read_changelog, read_store
from patron.yaml_config import read_yaml

app = typer.Typer(
    help="Segment and trigger definitions: validate, list, show, preview, members, size history."
)

BUCKETS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00Z"}
FORMATS = ("table", "csv", "json")

DefinitionsOption = typer.Option(
    None, "--definitions", help="Definitions directory (default PATRON_SEGMENTS or <data-dir>/segments)."
)
AppIdOption = typer.Option(
    DEFAULT_APP_ID, "--app-id", help="Kafka only: the `patron worker --app-id` whose stores to read."
)


# -- loading --------------------------------------------------------------------------------------
def _load(settings: Settings, override: Path | None) -> tuple[Path, Definitions]:
    """The definitions directory and what it defines, as ``patron run`` loads them (built-ins included)."""
    if override is not None and not override.is_dir():
        raise PatronError(f"{override}: no such definitions directory", EXIT_INVALID)
    directory = override if override is not None else settings.segments_dir
    return directory, load_definitions(directory)


def _find(definitions: Definitions, name: str) -> Definition:
    """The definition called ``name``; otherwise one line saying so, with the closest name."""
    found = definitions.find(name)
    if found is not None:
        return found
    if name in definitions.disabled:
        raise PatronError(f"{name!r} is disabled (enabled: false); enable it to use it", EXIT_INVALID)
    raise PatronError(f"no segment or trigger named {name!r}{_suggestion(definitions, name)}", EXIT_INVALID)


def _suggestion(definitions: Definitions, name: str, also: Collection[str] = ()) -> str:
    names = {d.name for d in (*definitions.segments, *definitions.triggers)} | set(also)
    match = process.extractOne(name, sorted(names), score_cutoff=60)
    return f"; did you mean {match[0]!r}?" if match else "; `patron segments list` shows them all"


@contextmanager
def _log(settings: Settings) -> Iterator[EventLog]:
    log = open_log(settings)
    try:
        yield log
    finally:
        log.close()


def _store(log: EventLog, app_id: str, store: str) -> dict[str, Any]:
    """A store of the profiles stage: the embedded runner's state, or the Kafka worker's changelog."""
    if isinstance(log, LocalLog):
        return read_store(log, ProfileProcessor.name, store)
    return read_changelog(log, app_id, ProfileProcessor.name, store)


def current_members(definition: Definition, states: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Profile id -> (since micros, version) of those currently in a segment, or for whom a trigger's
    condition holds (it fired when it started to hold)."""
    if definition.kind == "segment":
        return {
            key: (state["in"][definition.name]["since"], state["in"][definition.name]["v"])
            for key, state in states.items()
            if definition.name in state.get("in", {})
        }
    return {
        key: (state["holds"][definition.name], definition.version)
        for key, state in states.items()
        if definition.name in state.get("holds", {})
    }


def _file(definition: Definition) -> str:
    return "built in" if definition.source.endswith("(built in)") else Path(definition.source).name


def _time(micros: int | None) -> str:
    return shown(micros, TIME)


# -- rendering a condition ------------------------------------------------------------------------
def render_condition(condition: Condition, indent: int = 0) -> list[str]:
    """The condition tree as indented lines: ``all of:`` / ``any of:`` / ``not:`` over the tests."""
    pad = "  " * indent
    if isinstance(condition, Leaf):
        return [pad + condition.test()]
    head = {"all": "all of:", "any": "any of:", "not": "not:"}[condition.kind]
    return [
        pad + head,
        *(line for child in condition.children for line in render_condition(child, indent + 1)),
    ]


# -- commands -------------------------------------------------------------------------------------
@app.command("validate")
def validate(
    ctx: typer.Context,
    directory: Path | None = typer.Argument(
        None, help="Definitions directory (default PATRON_SEGMENTS or <data-dir>/segments)."
    ),
) -> None:
    """Load and check every definition file (and the built-in triggers); one line either way."""
    where, definitions = _load(settings_of(ctx), directory)
    files = len(definition_files(where))
    disabled = f"; disabled: {', '.join(definitions.disabled)}" if definitions.disabled else ""
    console.print(
        f"{len(definitions.segments)} segments, {len(definitions.triggers)} triggers OK "
        f"(fingerprint {definitions.fingerprint}; {files} file{'' if files == 1 else 's'} in {escape(str(where))} "
        f"+ built-ins){disabled}",
        highlight=False,
        soft_wrap=True,
    )


WIDE = 100
"""Terminal width from which ``segments list`` also shows each definition's file."""


@app.command("list")
def list_(
    ctx: typer.Context, definitions_dir: Path | None = DefinitionsOption, app_id: str = AppIdOption
) -> None:
    """Every segment and trigger with its version, current members, channels, consent and file."""
    settings = settings_of(ctx)
    directory, definitions = _load(settings, definitions_dir)
    with _log(settings) as log:
        states = _store(log, app_id, "segments")
    table = Table("name", "kind", "ver", "members", "channels", "consent", "file")
    for column in table.columns[:4]:
        column.no_wrap = True
    table.columns[3].justify = "right"
    if console.width < WIDE:
        table.columns.pop()  # the file column: `segments show NAME` has it
    for definition in (*definitions.segments, *definitions.triggers):
        table.add_row(
            definition.name,
            definition.kind,
            str(definition.version),
            f"{len(current_members(definition, states)):,}",
            ", ".join(definition.channels) or "-",
            definition.purpose or NO_CONSENT,
            *([escape(_file(definition))] if console.width >= WIDE else []),
        )
    for kind, item, source in _disabled(directory, definitions.disabled):
        table.add_row(
            f"[dim]{item['name']}[/]",
            kind,
            str(item.get("version", 1)),
            "disabled",
            ", ".join(item.get("channels", [])) or "-",
            str(item.get("consent", "marketing")),
            *([escape(source)] if console.width >= WIDE else []),
            style="dim",
        )
    console.print(table)


def _disabled(directory: Path, names: tuple[str, ...]) -> list[tuple[str, dict[str, Any], str]]:
    """(kind, raw item, file name) of the disabled definitions: load_definitions keeps only their
    names, the files say the rest (already validated by then)."""
    found = []
    for path in definition_files(directory):
        document = read_yaml(path, "segment definitions") or {}
        for key, kind in (("segments", "segment"), ("triggers", "trigger")):
            found += [(kind, item, path.name) for item in document.get(key) or [] if item["name"] in names]
    return sorted(found, key=lambda entry: entry[1]["name"])


@app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A segment or trigger name."),
    definitions_dir: Path | None = DefinitionsOption,
    app_id: str = AppIdOption,
) -> None:
    """One definition: description, condition, the fields it reads, what it carries, and its size."""
    settings = settings_of(ctx)
    _, definitions = _load(settings, definitions_dir)
    definition = _find(definitions, name)
    with _log(settings) as log:
        size = len(current_members(definition, _store(log, app_id, "segments")))
    lines = [
        f"[bold]{definition.kind} {escape(definition.name)}[/] version {definition.version}",
        f"description: {escape(definition.description or '-')}",
        "condition:",
        *(escape("  " + line) for line in render_condition(definition.condition)),
        f"reads: {', '.join(sorted({leaf.field for leaf in leaves(definition.condition)}))}",
        f"include: {', '.join(definition.include) or '-'}",
        f"channels: {', '.join(definition.channels) or '-'}",
        f"consent: {definition.purpose or 'none (no consent check)'}",
    ]
    if definition.kind == "trigger":
        lines += [
            f"action: {definition.action}",
            f"cap: {definition.cap_max} per {duration_text(definition.cap_per)} per profile and channel",
        ]
    members = "members now" if definition.kind == "segment" else "profiles for whom it holds now"
    lines += [f"file: {escape(definition.source)}", f"{members}: {size:,}"]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def parse_at(text: str | None) -> int:
    """``--at`` in microseconds since the epoch (ISO 8601; a time without zone is UTC; default now)."""
    if text is None:
        return int(time.time() * 1_000_000)
    return int(parse_time(text, "--at").timestamp() * 1_000_000)


@app.command("preview")
def preview(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A segment or trigger name."),
    limit: int = typer.Option(10, "--limit", min=0, help="Profiles to show in the sample."),
    at: str | None = typer.Option(None, "--at", help="Evaluate at this moment (ISO 8601, default now)."),
    definitions_dir: Path | None = DefinitionsOption,
    app_id: str = AppIdOption,
) -> None:
    """Evaluate the definition as the files say now over every current profile: who would enter, who
    would exit, and why. Nothing is emitted or stored."""
    settings = settings_of(ctx)
    _, definitions = _load(settings, definitions_dir)
    definition = _find(definitions, name)
    moment = parse_at(at)
    with _log(settings) as log:
        profiles = {k: v for k, v in _store(log, app_id, "profiles").items() if "merged_into" not in v}
        current = current_members(definition, _store(log, app_id, "segments"))
    matching: dict[str, list[str]] = {}
    reasons: dict[str, list[str]] = {}
    progress = transient_progress("preview {task.description}")
    with progress:
        task = progress.add_task(definition.name, total=len(profiles))
        for key in sorted(profiles):
            held, why = evaluate(definition.condition, Fields(profiles[key], moment))
            reasons[key] = why
            if held:
                matching[key] = why
            progress.advance(task)
    enter = sorted(set(matching) - set(current))
    leave = sorted(set(current) - set(matching))
    stay = sorted(set(matching) & set(current))
    console.print(
        f"{definition.kind} {escape(definition.name)} version {definition.version} at {_time(moment)}: "
        f"{len(matching):,} of {len(profiles):,} profiles match; {len(current):,} now; "
        f"would enter {len(enter):,}, would exit {len(leave):,}",
        highlight=False,
        soft_wrap=True,
    )
    rows = (
        [("enter", key) for key in enter] + [("exit", key) for key in leave] + [("stay", key) for key in stay]
    )
    if not rows or limit == 0:
        return
    table = Table("profile", "change", "reason", title=f"Sample ({min(limit, len(rows))} of {len(rows)})")
    table.columns[0].no_wrap = True
    table.columns[2].overflow = "fold"
    for change, key in rows[:limit]:
        reason = " and ".join(reasons.get(key) or ["not a current profile"])
        table.add_row(key, change, escape(reason))
    console.print(table)


@app.command("members")
def members(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A segment or trigger name."),
    format_: str = typer.Option("table", "--format", help="table, csv or json."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="At most N members (longest-standing first)."
    ),
    definitions_dir: Path | None = DefinitionsOption,
    app_id: str = AppIdOption,
) -> None:
    """The current members (profile id, since, version), longest-standing first."""
    if format_ not in FORMATS:
        raise PatronError(f"--format {format_!r}: use one of {', '.join(FORMATS)}", EXIT_INVALID)
    settings = settings_of(ctx)
    _, definitions = _load(settings, definitions_dir)
    definition = _find(definitions, name)
    with _log(settings) as log:
        current = current_members(definition, _store(log, app_id, "segments"))
    ordered = sorted(current.items(), key=lambda item: (item[1][0], item[0]))
    shown_rows = [
        {"profile_id": key, "since": _time(since), "version": version} for key, (since, version) in ordered
    ][:limit]
    if format_ == "json":
        typer.echo(orjson.dumps(shown_rows, option=orjson.OPT_INDENT_2).decode())
    elif format_ == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, ["profile_id", "since", "version"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(shown_rows)
        typer.echo(out.getvalue(), nl=False)
    else:
        title = f"{definition.name}: {len(current):,} members" + (
            f" (showing {len(shown_rows):,})" if len(shown_rows) < len(current) else ""
        )
        table = Table("profile", "since", "version", title=title, title_justify="left")
        table.columns[0].no_wrap = True
        for row in shown_rows:
            table.add_row(row["profile_id"], row["since"], str(row["version"]))
        console.print(table)


def size_history_rows(changes: list[tuple[datetime, int]], by: str) -> list[tuple[str, int, int, int]]:
    """(bucket, entered, exited, size at the end of the bucket) from (evaluated_at, +1/-1) changes."""
    entered: Counter[str] = Counter()
    exited: Counter[str] = Counter()
    for at, step in changes:
        bucket = at.astimezone(UTC).strftime(BUCKETS[by])
        (entered if step > 0 else exited)[bucket] += 1
    size, rows = 0, []
    for bucket in sorted(set(entered) | set(exited)):
        size += entered[bucket] - exited[bucket]
        rows.append((bucket, entered[bucket], exited[bucket], size))
    return rows


@app.command("size-history")
def size_history(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A segment name (also one since removed from the files)."),
    by: str = typer.Option("day", "--by", help="Bucket by day or hour (UTC)."),
    definitions_dir: Path | None = DefinitionsOption,
) -> None:
    """Per day (or hour): entered, exited and the size at its end, folded from patron.segment-changes."""
    if by not in BUCKETS:
        raise PatronError(f"--by {by!r}: use day or hour", EXIT_INVALID)
    settings = settings_of(ctx)
    _, definitions = _load(settings, definitions_dir)
    defined = definitions.find(name)
    if defined is not None and defined.kind == "trigger":
        raise PatronError(
            f"{name!r} is a trigger: it fires, it has no members to count (its events are on {TRIGGERS_TOPIC})",
            EXIT_INVALID,
        )
    changes: list[tuple[datetime, int]] = []
    seen: set[str] = set()
    with _log(settings) as log:
        codec = open_codec(settings)
        progress = transient_progress(f"reading {SEGMENT_CHANGES_TOPIC}")
        with progress:
            task = progress.add_task("", total=sum(log.end_offsets(SEGMENT_CHANGES_TOPIC).values()))
            for record in scan(log, SEGMENT_CHANGES_TOPIC):
                progress.advance(task)
                event = codec.decode(record.value)
                payload = event["payload"]
                seen.add(payload["segment"])
                if payload["segment"] != name:
                    continue
                step = {SEGMENT_ENTERED: 1, SEGMENT_EXITED: -1}[event["envelope"]["event_type"]]
                changes.append((payload["evaluated_at"], step))
    if not changes and defined is None:
        raise PatronError(
            f"no segment named {name!r} in the definitions or on {SEGMENT_CHANGES_TOPIC}"
            + _suggestion(definitions, name, seen),
            EXIT_INVALID,
        )
    rows = size_history_rows(changes, by)
    table = Table(by, "entered", "exited", "size", title=f"{name}: size by {by} (UTC)", title_justify="left")
    for column in table.columns[1:]:
        column.justify = "right"
    for bucket, entered, exited, size in rows:
        table.add_row(bucket, f"{entered:,}", f"{exited:,}", f"{size:,}")
    console.print(table)
    if not rows:
        console.print(f"no changes of {escape(name)} on {SEGMENT_CHANGES_TOPIC} yet", highlight=False)
