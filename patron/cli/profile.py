"""``patron profile``: one customer's unified profile by any identifier, or every profile as Parquet.

Reads what ``patron run`` committed on the embedded log: the identity graph to find the profile,
the profile projection for identifiers, traits, counts and consent, and ``patron.profile-events``
for the timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from patron.cli.output import console, err_console, settings_on, transient_progress
from patron.errors import PatronError
from patron.events.codec import open_codec
from patron.projections.fact_tables import stored_profiles
from patron.projections.profile_export import count_profiles, export_profiles
from patron.projections.profile_reader import ProfileReader
from patron.projections.profile_rules import load_profile_rules
from patron.projections.profiles import summary
from patron.streams.local_log import LocalLog

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(micros: int | None) -> str:
    """Microseconds since the epoch as ISO 8601 UTC (seconds), '-' when unknown."""
    if micros is None:
        return "-"
    return (EPOCH + timedelta(microseconds=micros)).isoformat(timespec="seconds")


@contextmanager
def embedded(ctx: typer.Context, command: str) -> Iterator[tuple[LocalLog, ProfileReader]]:
    """The embedded log and a reader over it; Kafka deployments keep profiles in the worker's tables."""
    settings = settings_on(
        ctx,
        "local",
        f"`patron {command}` reads the profiles `patron run` keeps in the embedded log; "
        "{broker} is Kafka, where they live in the worker's tables",
    )
    log = LocalLog(settings.broker.location, default_partitions=settings.partitions)
    try:
        yield log, ProfileReader(log, open_codec(settings))
    finally:
        log.close()


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr (only on a terminal); yields ``advance(n)``."""
    progress = transient_progress()
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def profile(
    ctx: typer.Context,
    identifier: str | None = typer.Argument(
        None, help="Any identifier (email, phone, user id, anonymous id, shop or CRM id) or a profile id."
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        "-k",
        help="Identifier kind: user_id, anonymous_id, email, phone, device_id or an external name.",
    ),
    region: str | None = typer.Option(
        None, "--region", help="Region for a phone number without country code, e.g. DE (default US)."
    ),
    timeline: int = typer.Option(20, "--timeline", "-t", min=0, help="Show the newest N events."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
    export: Path | None = typer.Option(
        None, "--export", help="Write profiles.parquet and identities.parquet for all profiles into DIR."
    ),
) -> None:
    """Show the unified profile of whoever IDENTIFIER names, or export all profiles with --export."""
    if (identifier is None) == (export is None):
        raise PatronError("give an IDENTIFIER to show one profile, or --export DIR to export all of them")
    with embedded(ctx, "profile") as (log, reader):
        rules = load_profile_rules()
        if export is not None:
            with progress_bar("exporting profiles", count_profiles(log)) as advance:
                profiles, identities = export_profiles(stored_profiles(log), export, rules.plan, advance)
            err_console.print(
                f"exported {profiles} profiles and {identities} identifiers to {escape(str(export))}",
                highlight=False,
            )
            return
        assert identifier is not None
        profile_id, state = reader.profile(reader.lookup(identifier, kind, region))
        view = summary(profile_id, state, rules.plan)
        with progress_bar("reading the timeline", None) as advance:
            events, total = reader.timeline(state, timeline, advance)
    merged_from = [key for key in state["keys"] if key != profile_id]
    if as_json:
        body = {**view, "merged_from": merged_from, "timeline_total": total, "timeline": events}
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    _print(view, merged_from, events, total)


def _print(view: dict[str, Any], merged_from: list[str], events: list[dict[str, Any]], total: int) -> None:
    console.print(f"[bold]Profile {view['profile_id']}[/]", highlight=False)
    if merged_from:
        console.print(f"includes profiles {', '.join(merged_from)}", highlight=False)
    console.print(
        f"first seen {moment(view['first_seen'])}   last seen {moment(view['last_seen'])}   "
        f"{view['events']} events",
        highlight=False,
    )
    ids = Table("kind", "value", title="Identifiers", title_justify="left")
    for kind, values in sorted(view["identifiers"].items()):
        for value in values:
            ids.add_row(kind, escape(value))
    console.print(ids)
    traits = Table("trait", "value", "source", "as of", title="Traits", title_justify="left")
    for name, entry in view["traits"].items():
        traits.add_row(name, escape(_text(entry["value"])), entry["source"], moment(entry["at"]))
    console.print(traits)
    counts = Table("by", "name", "events", title="Events", title_justify="left")
    for by in ("by_source", "by_type"):
        for name, count in view[by].items():
            counts.add_row(by.removeprefix("by_"), name, str(count))
    console.print(counts)
    consent = Table("purpose", "channel", "granted", "since", "source", title="Consent", title_justify="left")
    for key, entry in view["consent"].items():
        purpose, _, channel = key.partition(":")
        consent.add_row(
            purpose, channel, "yes" if entry["granted"] else "no", moment(entry["at"]), entry["source"]
        )
    console.print(consent)
    shown = Table(title=f"Timeline (newest {len(events)} of {total})", title_justify="left")
    for column in ("occurred_at", "type", "source"):
        shown.add_column(column, no_wrap=True)
    shown.add_column("details", overflow="fold")
    for event in events:
        envelope = event["envelope"]
        shown.add_row(
            envelope["occurred_at"].isoformat(timespec="seconds"),
            envelope["event_type"],
            envelope["source"],
            escape(_details(event["payload"])),
        )
    console.print(shown)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _details(payload: dict[str, Any]) -> str:
    """The event's scalar payload fields, enough to recognise it on one line."""
    text = " ".join(
        f"{name}={value}"
        for name, value in payload.items()
        if value is not None and not isinstance(value, dict | list)
    )
    return text if len(text) <= 80 else text[:79] + "…"
