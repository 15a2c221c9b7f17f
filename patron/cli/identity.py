"""``patron identity``: operator actions on the identity graph, and its audit trail.

``split`` does not change any state itself: it appends the operator's request to ``patron.events``,
so the split is a fact in the log, at its position, and every replay applies it again. The
identity stage applies it on the next ``patron run`` (or at once under ``patron run --follow``).
``match`` and ``review`` (probable duplicates without a shared identifier) live in ``identity_match``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import typer
from rich.markup import escape

from patron.cli import identity_match
from patron.cli.output import console, err_console, settings_of
from patron.cli.profile import embedded, progress_bar
from patron.errors import PatronError
from patron.events.codec import open_codec
from patron.identity.events import PROFILE_SPLIT
from patron.identity.processor import split_request
from patron.identity.rules import EXTERNAL
from patron.projections.profile_reader import ProfileReader, kind_of, normalised
from patron.streams.backends import open_log
from patron.streams.log import EVENTS_TOPIC
from patron.streams.topology import IDENTITY_TOPIC

app = typer.Typer(
    help="Merge probable duplicates, split wrongly merged profiles and audit identity decisions.",
    no_args_is_help=True,
)
app.command("match")(identity_match.match)
app.add_typer(identity_match.review_app, name="review")


def parse_identifier(text: str, region: str | None) -> tuple[str, str]:
    """``KIND:VALUE`` (``external:NAME:VALUE`` for external ids) as a normalised (kind, value)."""
    kind, sep, value = text.partition(":")
    if kind == "external":
        name, sep, value = value.partition(":")
        kind = EXTERNAL + name
    if not sep or not value.strip() or kind == EXTERNAL:
        raise PatronError(
            f"--identifier {text!r} is not KIND:VALUE; write e.g. email:jo@example.com, "
            "phone:+4915112345678 or external:crm_id:C-42"
        )
    kind = kind_of(kind)
    return kind, normalised(kind, value, region)


def _check(reader: ProfileReader, profile_id: str, kind: str, value: str) -> None:
    """Refuse a request the identity stage would refuse, while the operator is still at the prompt."""
    if reader.identity_profile(profile_id) is None:
        try:
            live, _ = reader.profile(profile_id)
        except PatronError:
            raise PatronError(
                f"no profile {profile_id}; `patron profile IDENTIFIER` shows a profile's id"
            ) from None
        raise PatronError(f"profile {profile_id} was merged into {live}; split {live} instead")
    holder = reader.holder(kind, value)
    if holder != profile_id:
        where = f"it belongs to profile {holder}" if holder else "no profile holds it"
        raise PatronError(f"profile {profile_id} holds no {kind} {value!r}; {where}")


@app.command("split")
def split_command(
    ctx: typer.Context,
    profile_id: str = typer.Argument(..., metavar="PROFILE", help="The profile to split."),
    identifier: str = typer.Option(
        ...,
        "--identifier",
        "-i",
        help="KIND:VALUE to split off, e.g. email:jo@example.com, external:crm_id:C-42.",
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
    region: str | None = typer.Option(
        None, "--region", help="Region for a phone number without country code."
    ),
) -> None:
    """Split an identifier (and what its merge brought in) off PROFILE into a new profile."""
    kind, value = parse_identifier(identifier, region)
    settings = settings_of(ctx)
    if settings.broker.scheme == "local":
        with embedded(ctx, "identity split") as (_, reader):
            _check(reader, profile_id, kind, value)
    request = split_request(profile_id, (kind, value), reason, at=datetime.now(UTC))
    log = open_log(settings)
    try:
        log.append(EVENTS_TOPIC, [open_codec(settings).message(request)])
    finally:
        log.close()
    err_console.print(
        f"split requested ({request['envelope']['event_id']}): {kind} off profile {profile_id}; "
        "the identity stage applies it (`patron run`, or a running `patron worker`); "
        "`patron identity show` lists the outcome",
        highlight=False,
    )


@app.command("show")
def show(
    ctx: typer.Context,
    target: str = typer.Argument(
        ..., metavar="PROFILE", help="A profile id, or any identifier of the profile."
    ),
    kind: str | None = typer.Option(
        None, "--kind", "-k", help="Identifier kind, when PROFILE is an identifier."
    ),
    region: str | None = typer.Option(
        None, "--region", help="Region for a phone number without country code."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON lines."),
) -> None:
    """List the identity events of a profile and of the profiles merged into it: links, merges, refusals, splits."""
    with embedded(ctx, "identity show") as (log, reader):
        if reader.known(target):
            profile_ids = {target}
            try:
                live, state = reader.profile(target)
                profile_ids |= {live, *state["keys"]}
            except PatronError:
                pass  # the projection has not caught up; the graph's own events still list
        else:
            live, state = reader.profile(reader.lookup(target, kind, region))
            profile_ids = {live, *state["keys"]}
        with progress_bar(
            "reading identity events", sum(log.end_offsets(IDENTITY_TOPIC).values())
        ) as advance:
            events = reader.identity_events(profile_ids, advance)
    if as_json:
        for event in events:
            typer.echo(orjson.dumps(event, default=str).decode())
        return
    if not events:
        raise PatronError(
            f"no identity events name {target}; `patron profile IDENTIFIER` shows a profile's id"
        )
    for event in events:
        envelope = event["envelope"]
        console.print(
            f"{envelope['occurred_at'].isoformat(timespec='seconds')}  {envelope['event_type']:<18}  "
            f"{escape(describe(event['payload'], envelope['event_type']))}",
            highlight=False,
            soft_wrap=True,
        )


def describe(payload: dict[str, Any], event_type: str) -> str:
    """One identity event as a sentence an operator can audit."""
    ids = ", ".join(f"{item['kind']}:{item['value']}" for item in payload["identifiers"])
    profile_id = payload.get("profile_id")
    if event_type == "identifier_linked":
        return f"{'created profile' if payload['created'] else 'linked to'} {profile_id}: {ids}"
    if event_type == "profiles_merged":
        return f"{payload['merged_profile_id']} merged into {profile_id}: {ids}"
    if event_type == "merge_refused":
        other = payload.get("other_profile_id")
        return (
            f"{ids} not linked to {profile_id}{f' (held by {other})' if other else ''}: {payload['reason']}"
        )
    if event_type == PROFILE_SPLIT:
        if payload.get("error"):
            return f"split of {profile_id} refused: {payload['error']}"
        return f"{ids} split off {profile_id} into {payload['new_profile_id']}: {payload.get('reason')}"
    return f"{ids} ignored: {payload['reason']}"
