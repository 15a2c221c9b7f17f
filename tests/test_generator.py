"""``patron generate``: determinism, manifest and ground truth against the files, mappings, dirt, signal.

Every test reads the files the real generator wrote (through the real CLI where it matters)
and checks them with independent readers (csv, json, pyarrow) and the real file connector,
so a manifest that drifts from the data or a mapping naming a missing column fails here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from patron.cli.main import app
from patron.connectors.mapping import load_mapping
from patron.events.normalize import normalize_email, normalize_phone
from patron.generator.dataset import Parameters, generate_dataset, stream
from patron.generator.people import build_population
from patron.generator.support import support
from patron.generator.timefmt import format_times
from patron.schemas.catalogue import default_catalogue

CUSTOMERS, DAYS, SEED, RATE = 200, 30, 11, 0.05
DATA_FILES = (
    "web_events.jsonl",
    "shop_orders.csv",
    "crm_contacts.csv",
    "support_tickets.csv",
    "surveys.csv",
    "email_engagement.parquet",
    "billing.parquet",
    "consent.jsonl",
    "leads.csv",
    "collector_batch.jsonl",
)
# How the collector names the types of Segment messages (type, event) the generator writes.
SEGMENT_TYPES = {
    ("page", None): "page_viewed",
    ("identify", None): "identify",
    ("track", "Product Viewed"): "product_viewed",
    ("track", "Cart Viewed"): "cart_updated",
    ("track", "Signed In"): "logged_in",
    ("track", "feature_used"): "feature_used",
}
runner = CliRunner()


def run_cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small data set written through the real ``patron generate`` command."""
    out = tmp_path_factory.mktemp("generated") / "demo"
    result = run_cli(
        "generate", "--customers", str(CUSTOMERS), "--days", str(DAYS), "--seed", str(SEED),
        "--out", str(out), "--malformed-rate", str(RATE), "--start", "2026-01-01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def manifest(dataset: Path) -> dict[str, Any]:
    return json.loads((dataset / "manifest.json").read_text())


@pytest.fixture(scope="module")
def truth(dataset: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (dataset / "ground_truth.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["file"]].append(row)
    return rows


def read_records(path: Path) -> list[dict[str, Any] | None]:
    """Every record of a data file in order; a JSON line that does not parse is ``None``."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(handle)]
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    records: list[dict[str, Any] | None] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append(None)
    return records


def columns_of(path: Path, records: list[dict[str, Any] | None]) -> set[str]:
    if path.suffix == ".parquet":
        return set(pq.read_schema(path).names)
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return set(next(csv.reader(handle)))
    return {key for record in records if record for key in record}


def file_digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(
    dataset: Path, tmp_path: Path
) -> None:
    params = Parameters(CUSTOMERS, DAYS, SEED, date(2026, 1, 1), RATE)
    generate_dataset(params, tmp_path / "again")
    first, again = file_digests(dataset), file_digests(tmp_path / "again")
    assert set(first) >= {*DATA_FILES, "ground_truth.csv", "manifest.json"}
    assert first == again
    generate_dataset(Parameters(CUSTOMERS, DAYS, SEED + 1, date(2026, 1, 1), RATE), tmp_path / "other")
    other = file_digests(tmp_path / "other")
    assert all(first[name] != other[name] for name in DATA_FILES), "another seed must change every file"


def test_manifest_counts_match_the_files(dataset: Path, manifest: dict[str, Any], truth: dict) -> None:
    assert set(manifest["files"]) == set(DATA_FILES)
    assert manifest["parameters"] == {
        "customers": CUSTOMERS, "days": DAYS, "seed": SEED, "start": "2026-01-01",
        "malformed_rate": RATE, "duplicate_rate": 0.01,
    }  # fmt: skip
    totals: Counter[str] = Counter()
    for name, summary in manifest["files"].items():
        path = dataset / name
        records = read_records(path)
        statuses = Counter(row["status"] for row in truth[name])
        assert summary["records"] == len(records) == len(truth[name]), name
        assert summary["duplicates"] == statuses["duplicate"], name
        assert summary["malformed"] == statuses["malformed"], name
        assert summary["unique_records"] == summary["records"] - summary["duplicates"], name
        # Count the events of the intact first-sent records from the file itself.
        counted: Counter[str] = Counter()
        spec = yaml.safe_load((dataset / summary["mapping"]).read_text()) if summary["mapping"] else None
        for record, row in zip(records, truth[name], strict=True):
            if row["status"] != "ok":
                continue
            assert record is not None, f"{name} record {row['record']} is intact but does not parse"
            if spec:
                for event in spec["events"]:
                    if event.get("when") is None or record.get(event["when"]) not in (None, ""):
                        counted[event["event_type"]] += 1
            else:
                counted[SEGMENT_TYPES[(record["type"], record.get("event"))]] += 1
        assert {k: v for k, v in summary["events"].items() if v} == dict(counted), name
        totals.update(summary["events"])
    assert manifest["events_total"] == sum(totals.values())
    assert {k: v for k, v in manifest["event_types"].items() if v} == {k: v for k, v in totals.items() if v}
    assert manifest["records_total"] == sum(s["records"] for s in manifest["files"].values())


def _columns_named(event: dict[str, Any]) -> list[str]:
    named = [event["when"]] if event.get("when") else []
    named += [part for part in event.get("event_id", []) if not part.startswith("literal:")]
    for spec in event["fields"].values():
        named.append(spec if isinstance(spec, str) else spec["column"])
    return named


def test_every_mapping_loads_and_names_only_existing_columns_and_event_types(
    dataset: Path, manifest: dict[str, Any]
) -> None:
    catalogue = default_catalogue()
    mapped = {name for name, summary in manifest["files"].items() if summary["mapping"]}
    assert mapped == set(DATA_FILES) - {"collector_batch.jsonl"}
    assert manifest["files"]["collector_batch.jsonl"]["connector"] == "segment"
    for name in sorted(mapped):
        path = dataset / manifest["files"][name]["mapping"]
        assert path == dataset / "mappings" / f"{Path(name).stem}.yaml"
        spec = yaml.safe_load(path.read_text())
        assert spec["source"] and spec["events"], path
        columns = columns_of(dataset / name, read_records(dataset / name))
        for event in spec["events"]:
            schema = catalogue.get(event["event_type"])  # raises for an unknown event type
            payload_fields = {f["name"] for f in schema.schema["fields"][1]["type"]["fields"]}
            assert set(event) <= {"event_type", "event_id", "when", "fields", "constants"}
            missing = [column for column in _columns_named(event) if column not in columns]
            assert not missing, f"{path.name} {event['event_type']}: no column {missing} in {name}"
            for target in [*event["fields"], *event.get("constants", {})]:
                if target.startswith("payload."):
                    assert target.split(".")[1] in payload_fields, f"{path.name}: {target}"
        # The file connector's own loader checks every target path against the Avro schema.
        assert len(load_mapping(path).events) == len(spec["events"])


def test_ground_truth_covers_every_record_with_its_key_and_owner(
    dataset: Path, manifest: dict[str, Any], truth: dict
) -> None:
    keys = {"web_events.jsonl": "messageId", "shop_orders.csv": "order_id", "crm_contacts.csv": "crm_id",
            "support_tickets.csv": "ticket_id", "surveys.csv": "response_id", "email_engagement.parquet": "message_id",
            "billing.parquet": "event_id", "consent.jsonl": "id", "leads.csv": "lead_id",
            "collector_batch.jsonl": "messageId"}  # fmt: skip
    people = set()
    for name in DATA_FILES:
        records = read_records(dataset / name)
        rows = truth[name]
        assert [int(row["record"]) for row in rows] == list(range(1, len(records) + 1)), name
        for record, row in zip(records, rows, strict=True):
            assert re.fullmatch(r"P\d{7}", row["person_id"]), row
            people.add(row["person_id"])
            if row["status"] == "ok":
                assert record is not None and record[keys[name]] == row["key"], (name, row)
            if row["status"] == "duplicate":
                original = rows[int(row["duplicate_of"]) - 1]
                assert original["key"] == row["key"] and original["person_id"] == row["person_id"]
                assert record == records[int(row["duplicate_of"]) - 1], "a re-send must be an exact copy"
            if row["status"] == "malformed":
                assert row["reason"], row
    assert 0 < len(people) <= CUSTOMERS


def test_malformed_share_follows_the_rate_with_the_usual_defects(truth: dict) -> None:
    rows = [row for file_rows in truth.values() for row in file_rows]
    originals = [row for row in rows if row["status"] != "duplicate"]
    broken = sum(row["status"] == "malformed" for row in originals)
    sigma = math.sqrt(len(originals) * RATE * (1 - RATE))
    assert abs(broken - len(originals) * RATE) < 4 * sigma, (broken, len(originals))
    reasons = Counter(row["reason"] for row in rows if row["status"] == "malformed")
    for expected in ("broken JSON: the line is truncated", "unparseable timestamp in timestamp",
                     "missing required userId and anonymousId"):  # fmt: skip
        assert reasons[expected] > 0, reasons


def test_truncated_lines_are_exactly_the_unparseable_ones(dataset: Path, truth: dict) -> None:
    for name in ("web_events.jsonl", "consent.jsonl", "collector_batch.jsonl"):
        records = read_records(dataset / name)
        unparseable = {index + 1 for index, record in enumerate(records) if record is None}
        truncated = {int(row["record"]) for row in truth[name] if row["reason"].startswith("broken JSON")}
        assert unparseable == truncated, name


def test_dirt_spells_the_same_person_differently_across_and_within_sources(
    dataset: Path, truth: dict
) -> None:
    owners: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    spellings: dict[str, set[str]] = defaultdict(set)
    phones: dict[str, set[str]] = defaultdict(set)
    for name, key_column, region in (
        ("shop_orders.csv", "customer_id", "DE"),
        ("crm_contacts.csv", "crm_id", "US"),
    ):
        for record, row in zip(read_records(dataset / name), truth[name], strict=True):
            if row["status"] != "ok":
                continue
            owners[row["person_id"]][name].add(record[key_column])
            if record["email"]:
                spellings[normalize_email(record["email"])].add(record["email"])
            if record["phone"]:
                phones[normalize_phone(record["phone"], region)].add(record["phone"])
    in_both = [p for p, seen in owners.items() if {"shop_orders.csv", "crm_contacts.csv"} <= set(seen)]
    assert in_both, "some customers must appear under a shop id and a CRM id"
    assert any(len(seen.get("crm_contacts.csv", ())) > 1 for seen in owners.values()), (
        "a person entered twice"
    )
    assert any(any(s != s.strip() or s != s.lower() for s in v) for v in spellings.values())
    formats = {re.sub(r"\d", "9", phone) for variants in phones.values() for phone in variants}
    assert {"+49 99 9999999", "099 9999999", "(999) 999-9999"} & formats, formats
    assert len(formats) >= 4, formats
    names = [r["full_name"] for r in read_records(dataset / "crm_contacts.csv") if r and r["full_name"]]
    assert any(re.fullmatch(r"[A-Z]\. \S+", n) for n in names), "abbreviated names like 'J. Smith'"


def test_unhappy_customers_churn_sooner_open_more_tickets_and_score_lower() -> None:
    params = Parameters(4000, 120, 3, date(2026, 1, 1))
    window = params.window
    pop = build_population(params.customers, window, stream(params.seed, "people"))
    tickets, surveys = support(pop, window, stream(params.seed, "support"))
    unhappy = pop.satisfaction < -0.5
    churned = pop.life.churn < window.end
    assert churned[unhappy].mean() > churned[~unhappy].mean()
    active = pop.life.active_days(window)
    per_day = np.bincount(tickets.person, minlength=pop.n) / np.maximum(active, 1e-9)
    assert per_day[unhappy & (active > 0)].mean() > 1.5 * per_day[~unhappy & (active > 0)].mean()
    table = surveys.render(np.arange(surveys.size)).to_pydict()
    score = np.array([int(s) for s in table["score"]])
    nps = np.array([kind == "NPS" for kind in table["kind"]])
    owner_unhappy = unhappy[surveys.person]
    assert score[nps & owner_unhappy].mean() < score[nps & ~owner_unhappy].mean() - 1


@pytest.mark.parametrize("zone", [None, "Europe/Berlin", "America/New_York"])
def test_timestamps_match_python_strftime(zone: str | None) -> None:
    rng = np.random.default_rng(4)
    # 1970-2100 in UTC; 2020-2030 (both DST rules of each zone, far fewer hours to look up) with a zone.
    low, high = (1_577_836_800, 1_893_456_000) if zone else (0, 4_102_444_800)
    us = rng.integers(low * 1_000_000, high * 1_000_000, size=3000)
    formatted = format_times(us, "%d.%m.%Y %H:%M:%S.%L%z", zone).to_pylist()
    for value, text in zip(us.tolist(), formatted, strict=True):
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
        moment = moment.astimezone(ZoneInfo(zone)) if zone else moment
        offset = moment.strftime("%z")
        expected = moment.strftime("%d.%m.%Y %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        assert text == f"{expected}{offset[:3]}:{offset[3:]}"


def test_ingesting_the_generated_files_accounts_for_every_record(
    dataset: Path, manifest: dict[str, Any], tmp_path: Path
) -> None:
    result = run_cli("--data-dir", str(tmp_path / "patron"), "ingest", str(dataset), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {Path(s["path"]).name for s in report["skipped_files"]} == {
        "collector_batch.jsonl",
        "ground_truth.csv",
    }
    segment = run_cli(
        "--data-dir", str(tmp_path / "patron"), "ingest", str(dataset / "collector_batch.jsonl"),
        "--connector", "segment", "--option", "source=app", "--json",
    )  # fmt: skip
    assert segment.exit_code == 0, segment.output
    targets = report["targets"] + json.loads(segment.stdout)["targets"]
    assert {Path(t["target"]).name for t in targets} == set(DATA_FILES)
    for counts in targets:
        name = Path(counts["target"]).name
        summary = manifest["files"][name]
        assert counts["accepted"] + counts["rejected"] + counts["duplicates"] == counts["read"], counts
        assert counts["duplicates"] == sum(summary["events_in_duplicates"].values()), counts
        clean, broken = sum(summary["events"].values()), sum(summary["events_in_malformed"].values())
        assert clean <= counts["accepted"] <= clean + broken, (counts, summary)
        assert (counts["rejected"] > 0) == (summary["malformed"] > 0), (counts, summary)


def test_generate_refuses_a_bad_start_date_in_one_line(tmp_path: Path) -> None:
    patron = Path(sys.executable).with_name("patron")
    command = [str(patron), "generate", "--out", str(tmp_path / "x"), "--start", "2026-13-01"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --start '2026-13-01' is not a date: use YYYY-MM-DD, e.g. 2026-01-01"
    ]
    assert not (tmp_path / "x").exists()
