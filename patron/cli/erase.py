"""``patron erase IDENTIFIER``: forget a person (GDPR art. 17) by crypto-shredding; see projections/erasure.py."""

from __future__ import annotations

import typer
from rich.table import Table

from patron.cli.output import console, err_console, settings_of, transient_progress
from patron.errors import EXIT_INVALID, PatronError
from patron.projections.erasure import erase as erase_person
from patron.streams.local_runner import ProcessorStats


def erase(
    ctx: typer.Context,
    identifier: str = typer.Argument(
        ..., help="Any identifier of the person (email, phone, user or CRM id) or a profile id."
    ),
    kind: str | None = typer.Option(
        None, "--kind", "-k", help="Identifier kind, when IDENTIFIER is ambiguous."
    ),
    region: str | None = typer.Option(
        None, "--region", help="Region of a phone number without country code."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Reason code, e.g. account_closed, objection."),
    requested_by: str = typer.Option("dpo", "--requested-by", help="subject, agent, dpo or api."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Erase a person: delete their keys, rebuild the projections, purge dead letters and snapshots."""
    if not yes:
        if not err_console.is_terminal:
            raise PatronError("erasure cannot be undone: confirm with --yes", EXIT_INVALID)
        typer.confirm(
            f"Erase everything Patron holds about {identifier!r}? This cannot be undone", abort=True
        )
    progress = transient_progress("erase: rebuilding {task.description}")
    with progress:
        tasks: dict[str, int] = {}

        def on_batch(name: str, stats: ProcessorStats) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=None)
            progress.update(tasks[name], completed=stats.processed, total=stats.processed + stats.remaining)

        record = erase_person(
            settings_of(ctx), identifier, kind=kind, region=region, reason=reason,
            requested_by=requested_by, on_batch=on_batch,
        )  # fmt: skip
    table = Table(title=f"erasure {record.request_id}", show_header=False)
    for label, value in (
        ("profiles removed", record.profiles),
        ("identifiers", record.identifiers),
        ("data keys deleted (log data now unreadable)", record.keys_deleted),
        ("events replayed to rebuild the projections", record.events_replayed),
        ("dead letters purged", record.dead_letters_purged),
        ("snapshots rewritten", record.snapshots_rewritten),
        ("snapshot rows removed", record.snapshot_rows_removed),
    ):
        table.add_row(label, f"{value:,}")
    console.print(table)
    err_console.print("audit record appended to DATA/erasures.jsonl (no personal data)")
