"""``patron identity match`` and ``patron identity review``: probable duplicates without a shared identifier.

``match`` scores the committed profiles (after ``patron run``), appends a merge request for every
pair at or above the auto-merge threshold and makes the grey-zone pairs the review list;
``review`` lists them with a per-field explanation, ``review accept|reject PAIR`` decides one.
Like ``patron identity split``, nothing here changes a profile: merges are requests on
``patron.events`` that the identity stage applies on the next ``patron run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from patron.cli.output import console, err_console, settings_of
from patron.cli.profile import embedded, progress_bar
from patron.errors import PatronError
from patron.identity.match_profiles import ProfileSet, read_profiles, request_identifier
from patron.identity.match_records import prepare, record_from_summary
from patron.identity.match_rules import MatchRules, load_match_rules
from patron.identity.matching import MatchReport, ScoredPair, find_pairs, score_pair
from patron.identity.processor import merge_request
from patron.identity.review import (
    MATCHER,
    MERGE_REQUESTED,
    MERGED,
    OPERATOR,
    PENDING,
    REJECTED,
    REVIEW_DB,
    PairRow,
    ReviewStore,
    Triage,
    triage,
)
from patron.projections.profile_export import count_profiles
from patron.projections.profile_reader import ProfileReader
from patron.projections.profile_rules import ProfilePlan, load_profile_rules
from patron.projections.profiles import summary
from patron.streams.log import EVENTS_TOPIC

RULES_HELP = "Matching rules YAML (default: the shipped identity/matching.yaml)."
review_app = typer.Typer(
    help="List pairs waiting for review (no sub-command), or accept / reject one.",
    invoke_without_command=True,
)


def _rules(path: Path | None, auto_merge: float | None = None, review: float | None = None) -> MatchRules:
    return load_match_rules(path).with_thresholds(auto_merge, review)


@contextmanager
def _review_store(ctx: typer.Context) -> Iterator[ReviewStore]:
    store = ReviewStore(settings_of(ctx).path(REVIEW_DB))
    try:
        yield store
    finally:
        store.close()


def _scoring_progress(advance: Callable[[int], None]) -> Callable[[str, int, int], None]:
    """The matcher reports (phase, done, total); the bar wants increments."""
    done_so_far = 0

    def report(_: str, done: int, total: int) -> None:
        nonlocal done_so_far
        advance(done - done_so_far)
        done_so_far = done

    return report


def _merge(
    reader: ProfileReader, pair_id: str, profiles: tuple[str, str], at: datetime
) -> tuple[str, dict[str, Any]]:
    """(request id, request) merging two live profiles for the decision on ``pair_id``."""
    named = (request_identifier(reader, profiles[0]), request_identifier(reader, profiles[1]))
    request = merge_request(f"pair:{pair_id}", profiles, named, at=at)
    return request["envelope"]["event_id"], request


def match(
    ctx: typer.Context,
    rules_path: Path | None = typer.Option(None, "--rules", help=RULES_HELP),
    auto_merge: float | None = typer.Option(None, "--auto-merge", help="Override the auto-merge threshold."),
    review: float | None = typer.Option(None, "--review", help="Override the review threshold."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Score and report; request no merge, keep the list."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and the pairs as JSON."),
) -> None:
    """Find probable duplicate profiles: merge pairs above the auto-merge threshold, queue the grey zone."""
    rules = _rules(rules_path, auto_merge, review)
    with embedded(ctx, "identity match") as (log, reader):
        with progress_bar("reading profiles", count_profiles(log)) as advance:
            profiles = read_profiles(reader, rules, load_profile_rules().plan, advance)
        with progress_bar("scoring pairs", None) as advance:
            report = find_pairs(profiles.records, rules, _scoring_progress(advance))
        with _review_store(ctx) as store:
            plan = triage(report.pairs, store.with_status(REJECTED, MERGE_REQUESTED), profiles.live_of, rules)
            if not dry_run:
                _apply(reader, store, plan, rules)
    _print_match(report, plan, profiles, rules, dry_run, as_json)


def _apply(reader: ProfileReader, store: ReviewStore, plan: Triage, rules: MatchRules) -> None:
    """Append the merge requests, then record them: a crash in between re-proposes the same pairs next
    time, whose requests have the same ids, so the log keeps each once."""
    now = datetime.now(UTC)
    requests = [(pair, *_merge(reader, pair.pair_id, (pair.a, pair.b), now)) for pair in plan.merge]
    if requests:
        reader.log.append(EVENTS_TOPIC, [reader.codec.message(request) for _, _, request in requests])
    threshold = rules.thresholds.auto_merge
    for pair, request_id, _ in requests:
        reason = f"score {pair.score:.1f} >= auto_merge {threshold:g}"
        store.decide(pair, MERGE_REQUESTED, MATCHER, now, request_id=request_id, reason=reason)
    store.mark(plan.now_merged, MERGED)
    store.replace_pending(plan.review, now)


def _print_match(
    report: MatchReport, plan: Triage, profiles: ProfileSet, rules: MatchRules, dry_run: bool, as_json: bool
) -> None:
    counts = {
        "profiles": report.records,
        "merged_profiles_skipped": len(profiles.merged_into),
        "candidate_pairs": report.compared,
        "pairs_above_review": len(report.pairs),
        "auto_merged": len(plan.merge),
        "for_review": len(plan.review),
        "rejected_before": plan.rejected,
        "merge_already_requested": plan.requested,
        "earlier_merges_applied": len(plan.now_merged),
        "blocks_skipped": len(report.skipped_blocks),
    }
    if as_json:
        document = {
            **counts,
            "dry_run": dry_run,
            "thresholds": rules.thresholds.model_dump(),
            "auto_merge": [pair.to_dict() for pair in plan.merge],
            "review": [pair.to_dict() for pair in plan.review],
        }
        typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    verb = "would be" if dry_run else "were"
    labels = {
        "profiles": "profiles compared",
        "merged_profiles_skipped": "merged-away profiles (not compared)",
        "candidate_pairs": "candidate pairs (after blocking)",
        "pairs_above_review": f"pairs scoring >= {rules.thresholds.review:g} (review)",
        "auto_merged": f"auto-merged (>= {rules.thresholds.auto_merge:g}): merge requests {verb} appended",
        "for_review": "queued for review (`patron identity review`)",
        "rejected_before": "rejected by an operator before (not proposed again)",
        "merge_already_requested": "merge already requested (waiting for `patron run`)",
        "earlier_merges_applied": "earlier merge requests now applied",
        "blocks_skipped": f"blocks over {rules.blocking.max_block_size} records skipped",
    }
    table = Table(
        "identity match", "count", title="dry run: nothing requested or stored" if dry_run else None
    )
    for key, count in counts.items():
        table.add_row(labels[key], f"{count:,}")
    console.print(table)
    if report.skipped_blocks:
        families = sorted({key.split(":", 1)[0] for key, _ in report.skipped_blocks})
        key, size = report.skipped_blocks[0]
        err_console.print(
            f"{len(report.skipped_blocks)} blocking keys ({', '.join(families)}) matched more than "
            f"{rules.blocking.max_block_size} profiles and were not expanded (largest: {key.split(':', 1)[0]}, "
            f"{size:,} profiles); raise blocking.max_block_size to compare them",
            highlight=False,
        )
    if plan.merge and not dry_run:
        err_console.print("the identity stage applies the merges on the next `patron run`", highlight=False)


# -- review ----------------------------------------------------------------------------------------
def _current(
    reader: ProfileReader, row: PairRow, rules: MatchRules, plan: ProfilePlan
) -> tuple[str, str, ScoredPair | None]:
    """(live a, live b, the pair scored on the profiles as they are now); None when they are one now."""
    live_a, state_a = reader.profile(row.profile_a)
    live_b, state_b = reader.profile(row.profile_b)
    if live_a == live_b:
        return live_a, live_b, None
    a = prepare(record_from_summary(summary(live_a, state_a, plan), rules))
    b = prepare(record_from_summary(summary(live_b, state_b, plan), rules))
    return live_a, live_b, score_pair(a, b, rules)


@review_app.callback()
def review(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many pairs (best first)."),
    rules_path: Path | None = typer.Option(None, "--rules", help=RULES_HELP + " Use the file `match` used."),
    as_json: bool = typer.Option(False, "--json", help="Print the pairs as JSON lines."),
) -> None:
    """List the pairs waiting for review, best score first, with why each field counted."""
    if ctx.invoked_subcommand is not None:
        return
    rules = _rules(rules_path)
    with embedded(ctx, "identity review") as (_, reader), _review_store(ctx) as store:
        rows = store.with_status(PENDING)
        plan = load_profile_rules().plan
        shown = [(row, *_current(reader, row, rules, plan)) for row in rows[:limit]]
    if as_json:
        for row, live_a, live_b, pair in shown:
            document = {"pair_id": row.pair_id, "score": round(row.score, 3), "profiles": [live_a, live_b]}
            document["explanation"] = pair.to_dict()["fields"] if pair else None
            typer.echo(orjson.dumps(document).decode())
        return
    if not rows:
        err_console.print("no pairs wait for review; `patron identity match` proposes them", highlight=False)
        return
    for row, live_a, live_b, pair in shown:
        _print_pair(row, live_a, live_b, pair, rules)
    more = f" (showing {len(shown)}; --limit for more)" if len(rows) > len(shown) else ""
    err_console.print(
        f"{len(rows)} pairs wait for review{more}: `patron identity review accept PAIR` merges a pair, "
        "`patron identity review reject PAIR` keeps them apart for good",
        highlight=False,
    )


def _print_pair(row: PairRow, live_a: str, live_b: str, pair: ScoredPair | None, rules: MatchRules) -> None:
    heading = f"pair {row.pair_id}  score {row.score:.1f}  (review >= {rules.thresholds.review:g}, "
    heading += f"auto-merge >= {rules.thresholds.auto_merge:g})\n{live_a}  vs  {live_b}"
    console.print(heading, highlight=False)
    if pair is None:
        console.print("  already one profile now; nothing to decide", highlight=False)
        return
    table = Table("field", "a", "b", "similarity", "points")
    for line in pair.fields:
        table.add_row(
            line.field, escape(line.a), escape(line.b), f"{line.similarity:.2f}", f"{line.points:+.1f}"
        )
    table.add_row("", "", "", "total now", f"{pair.score:+.1f}")
    console.print(table)


@review_app.command("accept")
def accept(
    ctx: typer.Context,
    pair_id: str = typer.Argument(..., metavar="PAIR", help="The pair id `patron identity review` shows."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept with the decision)."),
) -> None:
    """Merge the pair's two profiles (a merge request the identity stage applies on `patron run`)."""
    with embedded(ctx, "identity review accept") as (_, reader), _review_store(ctx) as store:
        row = store.get(pair_id)
        if row.status in (MERGE_REQUESTED, MERGED):
            raise PatronError(
                f"pair {row.pair_id} is {row.status.replace('_', ' ')} already; nothing to accept"
            )
        now = datetime.now(UTC)
        live_a, _ = reader.profile(row.profile_a)
        live_b, _ = reader.profile(row.profile_b)
        if live_a == live_b:
            store.decide(row, MERGED, OPERATOR, now, reason=reason)
            err_console.print(f"pair {row.pair_id}: already one profile ({live_a}); nothing to merge")
            return
        request_id, request = _merge(reader, row.pair_id, (live_a, live_b), now)
        reader.log.append(EVENTS_TOPIC, [reader.codec.message(request)])
        store.decide(row, MERGE_REQUESTED, OPERATOR, now, request_id=request_id, reason=reason)
    err_console.print(
        f"merge requested ({request_id}): profiles {live_a} and {live_b}; the identity stage applies it "
        "(`patron run`, or a running `patron worker`); `patron identity show` lists the outcome",
        highlight=False,
    )


@review_app.command("reject")
def reject(
    ctx: typer.Context,
    pair_id: str = typer.Argument(..., metavar="PAIR", help="The pair id `patron identity review` shows."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept with the decision)."),
) -> None:
    """Keep the pair's two profiles apart: the matcher never proposes them again."""
    with _review_store(ctx) as store:
        row = store.get(pair_id)
        if row.status in (MERGE_REQUESTED, MERGED):
            raise PatronError(
                f"pair {row.pair_id} is {row.status.replace('_', ' ')} already; after `patron run`, undo the "
                "merge with `patron identity split PROFILE --identifier KIND:VALUE`"
            )
        store.decide(row, REJECTED, OPERATOR, datetime.now(UTC), reason=reason)
    err_console.print(f"pair {row.pair_id} rejected: the matcher will not propose these profiles again")
