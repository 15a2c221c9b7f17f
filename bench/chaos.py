"""Fault proof (issue 6, part 5): the pipeline killed with SIGKILL again and again ends exactly as a clean run.

Usage: ``.venv/bin/python bench/chaos.py [--customers 2000] [--days 120] [--kills 20] [--seed 1] [--markdown]``

``patron generate`` writes a multi-source dataset, ``patron ingest`` puts it on an embedded log, and the
data directory is copied twice. *Clean*: ``patron run`` once, then ``patron snapshot --as-of D``.
*Chaos*: ``patron run`` started ``--kills`` times and SIGKILLed each time once the identity stage has
passed a random share of the events (plus a few random milliseconds, to land inside a batch), then
``patron run`` to the end and the same snapshot. Compared: every snapshot table row for row (order
ignored; the ``masked/`` copies are hashes of the compared raw tables under each directory's own
secret, so they are left out), every output topic's events by id (decoded: each directory encrypts
new subjects under its own keys) with the record count (an id twice would show), and every consumer
position on ``patron.events`` (and whether every consumer is caught up, alike in both). Segment changes and triggers are compared without the moments they were observed
(``occurred_at``, ``received_at``, ``evaluated_at`` and the reason quoting them): time-driven
transitions are evaluated when a runner's timer ticks, at wall-clock time, which differs between two
runs by construction. For the same reason the time-driven records themselves (``segment_timer_fired``
records and the transitions they caused) are counted but not compared: each start of ``patron run``
ticks at its wall-clock moment, also over a backlog not yet processed, so a run restarted 20 times
ticks 20 times more and evaluates windows at other moments than one uninterrupted run (which moment a
restarted runner should tick at is an open question: event-time timers would make them equal).
Exits 1 on any other difference.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from patron.config import Settings
from patron.events.codec import open_codec
from patron.machine import describe, one_line
from patron.projections.pii import MASKED_DIR
from patron.projections.segments.timers import SEGMENT_TIMER_FIRED
from patron.projections.segments.topics import SEGMENTS_SOURCE
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, scan
from patron.testing_kill import kill_repeatedly

PATRON = str(Path(sys.executable).with_name("patron"))
AS_OF = "2026-06-30"
START = "2026-02-01"
BATCH = "100"
"""Both runs use one batch size: batch boundaries decide how the identity stage's output interleaves
with the profiles stage's reads, and so the order of transitions (not what the final state is)."""
console = Console(stderr=True)


def patron(data_dir: Path, *args: str) -> None:
    done = subprocess.run([PATRON, "--data-dir", str(data_dir), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"patron {' '.join(args)} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        )


def prepare(work: Path, customers: int, days: int, seed: int) -> tuple[Path, int]:
    """The ingested (not yet processed) data directory, and how many events it holds."""
    generated, base = work / "generated", work / "base"
    patron(base, "generate", "--customers", str(customers), "--days", str(days), "--seed", str(seed),
           "--start", START, "--out", str(generated))  # fmt: skip
    files = [
        str(p) for p in sorted(generated.iterdir()) if (generated / "mappings" / f"{p.stem}.yaml").exists()
    ]
    patron(base, "ingest", *files, "--mapping-dir", str(generated / "mappings"))
    log = LocalLog(base)
    try:
        return base, sum(log.end_offsets(EVENTS_TOPIC).values())
    finally:
        log.close()


def clean_run(base: Path, target: Path) -> float:
    shutil.copytree(base, target)
    started = time.perf_counter()
    patron(target, "run", "--batch-size", BATCH)
    patron(target, "snapshot", "--as-of", AS_OF)
    return time.perf_counter() - started


def chaos_run(
    base: Path, target: Path, events: int, kills: int, rng: random.Random, logs: Path
) -> tuple[float, int]:
    """The same work, killed ``kills`` times; returns (seconds, kills that hit a runner with work left)."""
    shutil.copytree(base, target)
    log = LocalLog(target)
    started = time.perf_counter()
    try:
        interrupted = kill_repeatedly(
            [PATRON, "--data-dir", str(target), "run", "--batch-size", BATCH],
            lambda: sum(log.committed("identity", EVENTS_TOPIC).values()),
            events, kills, rng, logs,
        )  # fmt: skip
    finally:
        log.close()
    patron(target, "run", "--batch-size", BATCH)
    patron(target, "snapshot", "--as-of", AS_OF)
    return time.perf_counter() - started, interrupted


def tables(data_dir: Path) -> dict[str, Counter[bytes]]:
    """Every table of the current snapshot (``masked/`` left out) as a multiset of its rows, floats
    to 9 significant digits."""
    root = data_dir / "snapshots"
    current = root / orjson.loads((root / "manifest.json").read_bytes())["current"]
    return {
        parquet.stem: Counter(
            orjson.dumps(_rounded(row), default=str, option=orjson.OPT_SORT_KEYS)
            for row in pq.read_table(parquet).to_pylist()
        )
        for parquet in sorted(current.glob("*.parquet"))
        if parquet.parent.name != MASKED_DIR
    }


def _rounded(value: Any) -> Any:
    """Floats to 9 significant digits: DuckDB sums in parallel, so a KPI's last bits depend on the
    order its threads finish (``kpi_arpu_monthly`` differed in the 16th digit between identical runs)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def topics(data_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per topic: record count, event id -> decoded event, and apart from those the *time-driven*
    records (timer records and the transitions they caused, see the module docstring); and whether
    every consumer has read every record of its inputs, and its positions on ``patron.events``."""
    log = LocalLog(data_dir)
    codec = open_codec(Settings.load(data_dir=data_dir))
    try:
        decoded = {
            topic: [
                (r, codec.decode(r.value) if r.value[:1] == b"\x00" else r.value) for r in scan(log, topic)
            ]
            for topic in sorted(log.topics())
        }
        timers = {
            r.event_id
            for records in decoded.values()
            for r, value in records
            if isinstance(value, dict) and value["envelope"]["event_type"] == SEGMENT_TIMER_FIRED
        }
        found = {}
        for topic, records in decoded.items():
            events, timed = {}, {}
            for record, value in records:
                key = record.event_id or f"{record.partition}@{record.offset}"
                if isinstance(value, dict) and value["envelope"]["source"] == SEGMENTS_SOURCE:
                    caused = value["payload"].get("cause_event_id") in timers
                    if record.event_id in timers or caused:
                        timed[key] = value
                        continue
                    value = _without_wall_clock(value)
                events[key] = orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)
            found[topic] = {"records": len(records) - len(timed), "events": events, "timed": len(timed)}
        rows = log.db.execute(
            "SELECT c.consumer, t.name, c.partition, c.next_offset, h.next_offset FROM consumer_offsets c "
            "JOIN topics t ON t.id = c.topic_id JOIN heads h ON h.topic_id = c.topic_id AND h.partition = c.partition"
        ).fetchall()
        positions = {
            "caught up": all(position == end for _, _, _, position, end in rows),
            "on patron.events": sorted(row[:4] for row in rows if row[1] == EVENTS_TOPIC),
        }
        return found, positions
    finally:
        log.close()


def _without_wall_clock(event: dict[str, Any]) -> dict[str, Any]:
    """A segment change or trigger without the moments it was observed: a time-driven transition (a
    window that expired) is evaluated when a runner's timer ticks, i.e. at wall-clock time, which
    differs between two runs by construction. Which transitions, for whom, why, and their ids must not."""
    envelope = {k: v for k, v in event["envelope"].items() if k not in ("occurred_at", "received_at")}
    payload = {k: v for k, v in event["payload"].items() if k not in ("evaluated_at", "reason")}
    return {"envelope": envelope, "payload": payload}


def compare(clean: Path, chaos: Path) -> tuple[list[str], dict[str, int]]:
    """Differences (empty when equal) and what was compared."""
    problems: list[str] = []
    want, got = tables(clean), tables(chaos)
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            missing = sum((want.get(name, Counter()) - got.get(name, Counter())).values())
            extra = sum((got.get(name, Counter()) - want.get(name, Counter())).values())
            problems.append(f"table {name}: {missing} rows missing, {extra} extra")
    want_topics, want_positions = topics(clean)
    got_topics, got_positions = topics(chaos)
    for topic in sorted(set(want_topics) | set(got_topics)):
        a, b = want_topics.get(topic), got_topics.get(topic)
        if a is None or b is None:
            problems.append(f"topic {topic}: only in {'chaos' if a is None else 'clean'} run")
            continue
        if b["records"] != len(b["events"]):
            problems.append(f"topic {topic}: {b['records'] - len(b['events'])} duplicated records")
        lost = set(a["events"]) - set(b["events"])
        extra = set(b["events"]) - set(a["events"])
        changed = sum(a["events"][i] != b["events"][i] for i in set(a["events"]) & set(b["events"]))
        if lost or extra or changed:
            problems.append(f"topic {topic}: {len(lost)} lost, {len(extra)} extra, {changed} different")
    if want_positions != got_positions:
        problems.append("consumer positions differ")
    timed = (sum(t["timed"] for t in want_topics.values()), sum(t["timed"] for t in got_topics.values()))
    counted = {
        "tables": len(want),
        "table rows": sum(sum(rows.values()) for rows in want.values()),
        "topics": len(want_topics),
        "records": sum(t["records"] for t in want_topics.values()),
        "time-driven clean": timed[0],
        "time-driven chaos": timed[1],
    }
    return problems, counted


def run(customers: int, days: int, kills: int, seed: int, work: Path) -> dict[str, Any]:
    """The whole measurement in ``work``; returns the figures (``problems`` empty when equal)."""
    rng = random.Random(seed)
    base, events = prepare(work, customers, days, seed)
    clean_s = clean_run(base, work / "clean")
    logs = work / "kills"
    logs.mkdir()
    chaos_s, interrupted = chaos_run(base, work / "chaos", events, kills, rng, logs)
    problems, counted = compare(work / "clean", work / "chaos")
    return {"events": events, "kills": kills, "interrupted": interrupted, "clean_s": clean_s,
            "chaos_s": chaos_s, "problems": problems, **counted}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="patron-chaos-") as tmp,
        console.status("generating, ingesting, running clean and killed ..."),
    ):
        result = run(args.customers, args.days, args.kills, args.seed, Path(tmp))
    headers = ("events", "kills (with work left)", "clean s", "chaos s", "tables (rows)", "topics (records)",
               "time-driven records clean / chaos", "lost", "duplicated", "equal")  # fmt: skip
    equal = not result["problems"]
    line = (
        f"{result['events']:,}", f"{result['kills']} ({result['interrupted']})", f"{result['clean_s']:.0f}",
        f"{result['chaos_s']:.0f}", f"{result['tables']} ({result['table rows']:,})",
        f"{result['topics']} ({result['records']:,})",
        f"{result['time-driven clean']:,} / {result['time-driven chaos']:,}",
        str(sum("lost" in p and not p.split(": ")[1].startswith("0 lost") for p in result["problems"])),
        str(sum("duplicated" in p for p in result["problems"])), "yes" if equal else "NO",
    )  # fmt: skip
    table = Table(title="chaos: clean run vs run killed with SIGKILL")
    for header in headers:
        table.add_column(header)
    table.add_row(*line)
    Console().print(table)
    for problem in result["problems"]:
        console.print(f"[red]{problem}[/red]")
    console.print(one_line(describe(("fastavro", "cryptography"))), highlight=False)
    if args.markdown:
        print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n| " + " | ".join(line) + " |")
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
