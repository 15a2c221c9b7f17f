"""``patron consent show``: one customer's consent per purpose and channel, and how it came to be.

The matrix is the decision activation uses (``projections/segments/fields.py``): per (purpose,
channel) the latest decision for that channel or for ``all`` channels; an unsubscribe counts as
withdrawing marketing email. The history is every consent event of the profile, read from the log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from patron.cli.output import console
from patron.cli.profile import embedded, moment, progress_bar
from patron.projections.segments.fields import Fields

app = typer.Typer(help="Consent per purpose and channel, with its history.", no_args_is_help=True)

PURPOSES = ("marketing", "analytics", "personalisation")
CHANNELS = ("email", "sms", "push", "phone")
CONSENT_EVENTS = frozenset({"consent_changed", "email_unsubscribed"})


def matrix(fields: Fields) -> dict[str, dict[str, dict[str, Any] | None]]:
    """purpose -> channel -> the deciding consent entry (None: no decision on record). Purposes and
    channels are the usual ones plus any the profile's events named."""
    recorded = [key.split(":", 1) for key in fields.merged["consent"]]
    purposes = list(dict.fromkeys([*PURPOSES, *(p for p, _ in recorded)]))
    channels = list(dict.fromkeys([*CHANNELS, *(c for _, c in recorded if c != "all")]))
    return {p: {c: fields.consent_entry(p, c) for c in channels} for p in purposes}


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "[dim]-[/]"
    word = "[green]granted[/]" if entry["granted"] else "[red]withdrawn[/]"
    return f"{word} {moment(entry['at'])[:10]}"


@app.command("show")
def show(
    ctx: typer.Context,
    identifier: str = typer.Argument(..., help="Any identifier of the customer, or a profile id."),
    kind: str | None = typer.Option(None, "--kind", "-k", help="Identifier kind, e.g. email or user_id."),
    region: str | None = typer.Option(None, "--region", help="Region for a phone without country code."),
    history: int = typer.Option(50, "--history", min=0, help="Show the newest N consent events."),
    as_json: bool = typer.Option(False, "--json", help="Print the matrix and history as JSON."),
) -> None:
    """Consent of whoever IDENTIFIER names: purpose x channel, and the events that decided it."""
    with embedded(ctx, "consent show") as (_, reader):
        profile_id, state = reader.profile(reader.lookup(identifier, kind, region))
        with progress_bar("reading consent events", None) as advance:
            events, total = reader.timeline(state, history, advance, types=CONSENT_EVENTS)
    fields = Fields(state, int(datetime.now(UTC).timestamp() * 1_000_000))
    decisions = matrix(fields)
    if as_json:
        body = {"profile_id": profile_id, "consent": decisions, "history_total": total, "history": events}
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    console.print(f"[bold]Consent of profile {profile_id}[/]", highlight=False)
    channels = list(next(iter(decisions.values())))
    table = Table("purpose", *channels, title="Current decisions", title_justify="left")
    for purpose, row in decisions.items():
        table.add_row(purpose, *(_cell(row[channel]) for channel in channels))
    console.print(table)
    log = Table("occurred_at", "event", "purpose", "channel", "decision", "method", "source")
    log.title, log.title_justify = f"History (newest {len(events)} of {total})", "left"
    for event in events:
        envelope, payload = event["envelope"], event["payload"]
        unsubscribe = envelope["event_type"] == "email_unsubscribed"
        log.add_row(
            envelope["occurred_at"].isoformat(timespec="seconds"),
            envelope["event_type"],
            "marketing" if unsubscribe else payload["purpose"],
            "email" if unsubscribe else payload["channel"],
            "withdrawn" if unsubscribe or not payload["granted"] else "granted",
            escape(str(payload.get("method") or ("unsubscribe" if unsubscribe else "-"))),
            envelope["source"],
        )
    console.print(log)
