"""``patron dlq``: list, inspect and replay dead letters (records Patron refused, kept with their raw bytes)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from patron.cli.output import console, settings_of
from patron.connectors.deadletter import DeadLetterStore, LetterStatus
from patron.connectors.replay import replay_letters
from patron.errors import EXIT_INVALID, EXIT_REFUSED, PatronError
from patron.events.codec import open_codec
from patron.streams.backends import open_log

app = typer.Typer(
    help="Dead letters: every refused record with its raw payload and the reason.", no_args_is_help=True
)
SHORT_ID = 8


def _statuses(ctx: typer.Context) -> list[LetterStatus]:
    log = open_log(settings_of(ctx))
    try:
        return DeadLetterStore(log).statuses()
    finally:
        log.close()


def _find(statuses: list[LetterStatus], wanted: str) -> LetterStatus:
    """The letter whose id starts with ``wanted`` (ids are long; the first 8 characters usually suffice)."""
    matches = [status for status in statuses if status.letter.id.startswith(wanted.lower())]
    if not matches:
        raise PatronError(
            f"no dead letter has id {wanted!r}; `patron dlq list --all` shows them", EXIT_INVALID
        )
    if len(matches) > 1:
        raise PatronError(
            f"{len(matches)} dead letters have ids starting with {wanted!r}; give more characters"
        )
    return matches[0]


def _as_dict(status: LetterStatus) -> dict[str, Any]:
    letter = status.letter
    return {
        "id": letter.id,
        "status": "pending" if status.pending else "resolved",
        "received_at": letter.received_at.isoformat(),
        "source": letter.source,
        "connector": letter.connector,
        "location": letter.location,
        "reason": status.reason,
        "event_ids": list(status.resolution.event_ids) if status.resolution else [],
    }


@app.command("list")
def list_letters(
    ctx: typer.Context,
    source: str | None = typer.Option(None, "--source", help="Only letters of this source."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many (oldest first)."),
    include_resolved: bool = typer.Option(
        False, "--all", help="Include letters already resolved by a replay."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Pending dead letters: id, time, source, location and the latest reason."""
    selected = [
        status
        for status in _statuses(ctx)
        if (include_resolved or status.pending) and (source is None or status.letter.source == source)
    ]
    shown = selected[:limit]
    if as_json:
        for status in shown:
            typer.echo(orjson.dumps(_as_dict(status)).decode())
        return
    if not selected:
        console.print("No dead letters" + ("" if include_resolved else " pending") + ".")
        return
    table = Table(title="Dead letters")
    for column in ("id", "received", "source"):
        table.add_column(column, no_wrap=True)
    table.add_column("location", overflow="fold", ratio=1)
    table.add_column("reason", overflow="fold", ratio=2)
    if include_resolved:
        table.add_column("status", no_wrap=True)
    for status in shown:
        letter = status.letter
        row = [
            Text(letter.id[:SHORT_ID]),
            Text(letter.received_at.strftime("%Y-%m-%d %H:%M:%S")),
            Text(letter.source),
            Text(letter.location),
            Text(status.reason),
        ]
        table.add_row(
            *row, *([Text("pending" if status.pending else "resolved")] if include_resolved else [])
        )
    console.print(table)
    if len(selected) > len(shown):
        console.print(f"Showing {len(shown)} of {len(selected)}; use --limit to see more.")


@app.command("show")
def show(
    ctx: typer.Context, letter_id: str = typer.Argument(..., metavar="ID", help="Letter id (or its start).")
) -> None:
    """One letter in full: reason, replay history, details and the raw payload."""
    status = _find(_statuses(ctx), letter_id)
    letter = status.letter
    console.print(f"[bold]id[/]        {letter.id}")
    console.print(f"[bold]status[/]    {'pending' if status.pending else 'resolved'}")
    console.print(f"[bold]source[/]    {escape(letter.source)} (connector {escape(letter.connector)})")
    console.print(f"[bold]location[/]  {escape(letter.location)}", highlight=False)
    console.print(f"[bold]received[/]  {letter.received_at.isoformat()}")
    console.print("[bold]reason[/]    ", end="")
    console.print(letter.reason, markup=False, highlight=False, soft_wrap=True)
    if status.last_failure is not None:
        console.print(f"[bold]last replay[/] {status.last_failure.at.isoformat()} still failed: ", end="")
        console.print(status.last_failure.reason, markup=False, highlight=False, soft_wrap=True)
    if status.resolution is not None:
        events = ", ".join(status.resolution.event_ids)
        console.print(f"[bold]resolved[/]  {status.resolution.at.isoformat()} as event(s) {events}")
    console.print("[bold]details[/]")
    console.print(orjson.dumps(letter.details, option=orjson.OPT_INDENT_2).decode(), markup=False)
    try:
        raw, encoding = letter.raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        raw, encoding = base64.b64encode(letter.raw).decode(), "base64, not valid UTF-8"
    console.print(f"[bold]raw payload[/] ({len(letter.raw)} bytes, {encoding})")
    console.print(raw, markup=False, highlight=False, soft_wrap=True)


@app.command("replay")
def replay(
    ctx: typer.Context,
    letter_ids: list[str] | None = typer.Argument(
        None, metavar="[ID...]", help="Letters to replay (default: all pending)."
    ),
    source: str | None = typer.Option(None, "--source", help="Replay the pending letters of this source."),
    mapping: Path | None = typer.Option(
        None,
        "--mapping",
        "-m",
        help="Fixed mapping for file letters (default: the one they were ingested with).",
    ),
) -> None:
    """Re-submit letters through their connector after fixing the cause; exit 3 if some still fail."""
    settings = settings_of(ctx)
    statuses = _statuses(ctx)
    if letter_ids:
        chosen = [_find(statuses, wanted) for wanted in letter_ids]
        for status in chosen:
            if not status.pending:
                console.print(f"{status.letter.id[:SHORT_ID]} is already resolved; skipped.")
        selected = [status for status in chosen if status.pending]
    else:
        selected = [s for s in statuses if s.pending and (source is None or s.letter.source == source)]
    if not selected:
        console.print("No pending dead letters to replay.")
        return
    options = {"mapping": str(mapping)} if mapping else {}
    log = open_log(settings)
    try:
        outcomes = replay_letters(
            [status.letter for status in selected],
            log=log,
            codec=open_codec(settings),
            options=options,
        )
    finally:
        log.close()
    table = Table(title="Replay")
    for column in ("id", "location", "result"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        if outcome.resolved:
            result = f"resolved: {len(outcome.event_ids)} event(s)"
        else:
            result = f"still failing: {outcome.reason}"
        table.add_row(Text(outcome.letter.id[:SHORT_ID]), Text(outcome.letter.location), Text(result))
    console.print(table)
    failing = sum(not outcome.resolved for outcome in outcomes)
    console.print(f"{len(outcomes) - failing} resolved, {failing} still failing.")
    if failing:
        raise PatronError(
            f"{failing} dead letter(s) still fail; fix the cause (e.g. the mapping) and replay again",
            EXIT_REFUSED,
        )
