"""``patron profile`` and ``patron identity`` as a user runs them: real files, ``patron ingest``, ``patron run``.

Small CSV and JSONL files from four sources name one customer four ways (a web cookie that later
logs in, a shop customer id, a helpdesk email in other case and spacing, a phone number in local
format). Everything runs as subprocesses on a temporary data directory; the last test does the same
with a data set from ``patron generate`` and scores the profiles against its ground truth.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml
from test_ingest import cli, patron, write

from patron.events.normalize import normalize_phone
from patron.streams.local_log import LocalLog
from patron.streams.state import read_store

WEB_MAPPING = """\
source: web
events:
  - event_type: page_viewed
    event_id: [messageId]
    when: path
    fields: {occurred_at: timestamp, identifiers.anonymous_id: anonymousId, identifiers.user_id: userId,
             payload.url: url, payload.path: path, context.locale: locale}
  - event_type: logged_in
    event_id: [messageId]
    when: method
    fields: {occurred_at: timestamp, identifiers.anonymous_id: anonymousId, identifiers.user_id: userId,
             payload.method: method}
  - event_type: identify
    event_id: [messageId]
    when: first_name
    fields: {occurred_at: timestamp, identifiers.user_id: userId, identifiers.email: email,
             payload.first_name: first_name, payload.last_name: last_name}
"""
WEB_JSONL = """\
{"messageId": "m1", "timestamp": "2024-05-01T10:00:00Z", "anonymousId": "anon-7f3a", "path": "/", "url": "https://shop.example.com/", "locale": "de-DE"}
{"messageId": "m2", "timestamp": "2024-05-01T10:05:00Z", "anonymousId": "anon-7f3a", "userId": "u-1001", "method": "password"}
{"messageId": "m3", "timestamp": "2024-05-01T10:06:00Z", "userId": "u-1001", "email": "jo.doe@example.com", "first_name": "Jo", "last_name": "Doe"}
{"messageId": "m4", "timestamp": "2024-05-04T08:00:00Z", "anonymousId": "anon-99", "path": "/sale", "url": "https://shop.example.com/sale"}
"""
SHOP_MAPPING = """\
source: shop
default_region: DE
event_type: order_completed
event_id: [order_id]
fields:
  occurred_at: ordered_at
  identifiers.external_ids.shop_customer_id: customer_id
  identifiers.email: email
  payload.order_id: order_id
  payload.revenue: {column: total, type: float}
constants:
  payload.currency: EUR
"""
SHOP_CSV = """\
customer_id,email,order_id,ordered_at,total
9001, Jo.Doe@Example.COM ,O-1,2024-05-01T10:02:00Z,119.90
9002,kim@example.com,O-2,2024-05-02T11:00:00Z,20.00
"""
HELPDESK_MAPPING = """\
source: helpdesk
default_region: DE
event_type: ticket_opened
event_id: [ticket_id]
fields:
  occurred_at: opened_at
  identifiers.email: email
  identifiers.phone: phone
  payload.ticket_id: ticket_id
  payload.priority: priority
  payload.channel: channel
"""
HELPDESK_CSV = """\
ticket_id,email,phone,opened_at,priority,channel
T-1,"JO.DOE@example.com  ",030 1234567,2024-05-03T09:00:00Z,high,email
"""
CONSENT_MAPPING = """\
source: web
event_type: consent_changed
event_id: [id]
fields:
  occurred_at: at
  identifiers.user_id: userId
  payload.purpose: purpose
  payload.channel: channel
  payload.granted: {column: granted, type: bool}
"""
CONSENT_JSONL = """\
{"id": "c1", "userId": "u-1001", "at": "2024-05-01T10:07:00Z", "purpose": "marketing", "channel": "email", "granted": true}
{"id": "c2", "userId": "u-1001", "at": "2024-05-05T12:00:00Z", "purpose": "marketing", "channel": "email", "granted": false}
"""


def ok(result: Any) -> str:
    """stdout of a successful ``patron`` subprocess."""
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_cli(data_dir: Path, *args: str) -> str:
    """stdout of a successful in-process ``patron`` command (no interpreter start-up: keeps tests fast)."""
    code, out, error = cli(data_dir, *args)
    assert code == 0, error
    return out


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after ``patron ingest`` of four sources and ``patron run``."""
    root = tmp_path_factory.mktemp("customers")
    data_dir = root / "data"
    files = []
    for name, mapping, content in [
        ("web.jsonl", WEB_MAPPING, WEB_JSONL),
        ("shop.csv", SHOP_MAPPING, SHOP_CSV),
        ("helpdesk.csv", HELPDESK_MAPPING, HELPDESK_CSV),
        ("consent.jsonl", CONSENT_MAPPING, CONSENT_JSONL),
    ]:
        (root / "mappings").mkdir(exist_ok=True)
        write(root / "mappings" / f"{Path(name).stem}.yaml", mapping)
        files.append(str(write(root / name, content)))
    summary = json.loads(
        ok(patron(data_dir, "ingest", *files, "--mapping-dir", str(root / "mappings"), "--json"))
    )
    assert summary["totals"]["rejected"] == 0, summary["rejections"]
    ok(patron(data_dir, "run"))
    return data_dir


def show(data_dir: Path, *args: str) -> dict[str, Any]:
    return json.loads(run_cli(data_dir, "profile", *args, "--json"))


def test_any_identifier_finds_the_one_unified_profile(customers: Path):
    """By email in other case and spacing, by phone in local format, by shop id: the installed command."""
    by_email = json.loads(ok(patron(customers, "profile", "  JO.Doe@example.com", "--json")))
    assert by_email["identifiers"] == {
        "anonymous_id": ["anon-7f3a"],
        "email": ["jo.doe@example.com"],
        "external:shop_customer_id": ["9001"],
        "phone": ["+49301234567"],
        "user_id": ["u-1001"],
    }
    profile_id = by_email["profile_id"]
    by_phone = json.loads(ok(patron(customers, "profile", "030 1234567", "--region", "DE", "--json")))
    by_shop = ok(patron(customers, "profile", "9001"))
    assert by_phone["profile_id"] == profile_id
    assert f"Profile {profile_id}" in by_shop and "+49301234567" in by_shop
    assert show(customers, "9001", "--kind", "shop_customer_id")["profile_id"] == profile_id
    assert show(customers, "anon-7f3a")["profile_id"] == profile_id
    assert show(customers, profile_id)["profile_id"] == profile_id
    traits = {name: (t["value"], t["source"]) for name, t in by_email["traits"].items()}
    assert traits == {"first_name": ("Jo", "web"), "last_name": ("Doe", "web"), "locale": ("de-DE", "web")}
    assert by_email["by_source"] == {"helpdesk": 1, "shop": 1, "web": 5}
    assert by_email["consent"]["marketing:email"]["granted"] is False
    assert by_email["consent"]["marketing:email"]["source"] == "web"
    timeline = by_email["timeline"]
    assert by_email["timeline_total"] == 7
    assert [e["envelope"]["event_type"] for e in timeline] == [
        "consent_changed", "ticket_opened", "consent_changed", "identify", "logged_in", "order_completed",
        "page_viewed",
    ]  # fmt: skip
    assert len(show(customers, "u-1001", "--timeline", "2")["timeline"]) == 2


def test_the_table_view_shows_every_section(customers: Path):
    out = run_cli(customers, "profile", "jo.doe@example.com", "--timeline", "3")
    for heading in ("Identifiers", "Traits", "Events", "Consent", "Timeline (newest 3 of 7)"):
        assert heading in out
    assert "external:shop_customer_id" in out and "ticket_opened" in out


def test_unknown_and_ambiguous_identifiers_are_one_error_line(customers: Path):
    result = patron(customers, "profile", "nobody@example.com")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no profile holds 'nobody@example.com' as user_id, anonymous_id, email, phone, device_id or an "
        "external id; pass --kind if it is another kind, or run `patron run` if its events were ingested since"
    ]
    code, _, error = cli(customers, "profile", "12", "--kind", "phone")
    assert code == 2 and error.startswith("--kind phone: '12' is not")
    code, _, error = cli(customers, "profile", "x@example.com", "--kind", "emial")
    assert code == 2 and "did you mean 'email'?" in error
    code, _, error = cli(customers, "profile")
    assert code == 2 and "give an IDENTIFIER" in error


def test_export_writes_profiles_and_identities_as_parquet(customers: Path, tmp_path: Path):
    run_cli(customers, "profile", "--export", str(tmp_path / "out"))
    profiles = pq.read_table(tmp_path / "out" / "profiles.parquet").to_pylist()
    identities = pq.read_table(tmp_path / "out" / "identities.parquet")
    assert (
        pq.ParquetFile(tmp_path / "out" / "profiles.parquet").metadata.row_group(0).column(0).compression
        == "ZSTD"
    )
    assert len(profiles) == 3 and identities.num_rows == 8  # Jo, Kim (shop), the second web visitor
    jo = next(p for p in profiles if p["events"] == 7)
    assert dict(jo["traits"])["first_name"] == '"Jo"' and dict(jo["trait_sources"])["first_name"] == "web"
    assert dict(jo["consent"]) == {"marketing:email": False}
    kinds = Counter(row["kind"] for row in identities.to_pylist() if row["profile_id"] == jo["profile_id"])
    assert kinds == {"anonymous_id": 1, "email": 1, "external:shop_customer_id": 1, "phone": 1, "user_id": 1}


def test_a_split_is_applied_by_run_and_listed_by_show(customers: Path, tmp_path: Path):
    data_dir = tmp_path / "copy"
    shutil.copytree(customers, data_dir)
    profile_id = show(data_dir, "jo.doe@example.com")["profile_id"]
    code, _, error = cli(data_dir, "identity", "split", profile_id, "--identifier", "email:kim@example.com")
    assert code == 2 and "it belongs to profile" in error
    run_cli(
        data_dir,
        "identity",
        "split",
        profile_id,
        "-i",
        "external:shop_customer_id:9001",
        "--reason",
        "shared",
    )
    run_cli(data_dir, "run")
    shop, web = show(data_dir, "9001"), show(data_dir, "u-1001")
    assert shop["profile_id"] != profile_id and web["profile_id"] == profile_id
    assert (
        shop["identifiers"]["external:shop_customer_id"] == ["9001"] and "user_id" not in shop["identifiers"]
    )
    assert (
        web["identifiers"]["user_id"] == ["u-1001"] and "external:shop_customer_id" not in web["identifiers"]
    )
    # the order went with the shop id it is anchored on; nothing was lost or counted twice
    assert shop["by_type"]["order_completed"] == 1 and "order_completed" not in web["by_type"]
    assert web["events"] + shop["events"] == 7
    audit = run_cli(data_dir, "identity", "show", profile_id)
    assert f"split off {profile_id} into {shop['profile_id']}: shared" in audit
    assert f"created profile {profile_id}: anonymous_id:anon-7f3a" in audit
    code, _, error = cli(data_dir, "identity", "split", profile_id, "-i", "external:shop_customer_id:9001")
    assert code == 2 and f"it belongs to profile {shop['profile_id']}" in error


# -- generated data against its ground truth ---------------------------------------------------
def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        options = pa_csv.ParseOptions(newlines_in_values=True)
        return pa_csv.read_csv(path, parse_options=options).to_pylist()
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append({})  # a deliberately broken line; the ground truth marks it malformed
    return rows


def _owners(generated: Path) -> dict[str, set[str]]:
    """Identifier key -> the real persons whose records carry it, from the files, mappings and ground truth."""
    truth = {}
    with (generated / "ground_truth.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "ok":
                truth[(row["file"], int(row["record"]))] = row["person_id"]
    owners: dict[str, set[str]] = defaultdict(set)
    for mapping_path in sorted((generated / "mappings").glob("*.yaml")):
        mapping = yaml.safe_load(mapping_path.read_text())
        path = next(p for p in generated.iterdir() if p.is_file() and p.stem == mapping_path.stem)
        columns = {
            target.removeprefix("identifiers."): spec if isinstance(spec, str) else spec["column"]
            for event in mapping.get("events") or [mapping]
            for target, spec in (event.get("fields") or {}).items()
            if target.startswith("identifiers.")
        }
        for number, row in enumerate(_rows(path), 1):
            person = truth.get((path.name, number))
            for target, column in columns.items():
                value = row.get(column)
                if person is None or value is None or not str(value).strip():
                    continue
                kind = target.replace("external_ids.", "external:")
                text = str(value).strip()
                if kind == "email":
                    text = text.lower()
                elif kind == "phone":
                    try:
                        text = normalize_phone(text, mapping.get("default_region"))
                    except ValueError:
                        continue
                owners[f"{kind}:{text}"].add(person)
    return owners


def test_generated_customers_against_the_ground_truth(tmp_path: Path):
    generated, data_dir = tmp_path / "generated", tmp_path / "data"
    run_cli(
        tmp_path, "generate", "--customers", "150", "--days", "20", "--seed", "11", "--out", str(generated)
    )
    files = [
        str(p) for p in sorted(generated.iterdir()) if (generated / "mappings" / f"{p.stem}.yaml").exists()
    ]
    run_cli(data_dir, "ingest", *files, "--mapping-dir", str(generated / "mappings"), "--json")
    run_cli(data_dir, "run")
    owners = _owners(generated)
    log = LocalLog(data_dir)
    try:
        profiles = [p for p in read_store(log, "profiles", "profiles").values() if "merged_into" not in p]
    finally:
        log.close()
    persons = {person for people in owners.values() for person in people}
    profiles_per_person: Counter[str] = Counter()
    pure = 0
    for profile in profiles:
        people = set().union(*(owners[f"{k}:{v}"] for k, values in profile["ids"].items() for v in values))
        pure += len(people) == 1
        profiles_per_person.update(people)
    whole = sum(1 for person in persons if profiles_per_person[person] == 1)
    print(
        f"\nground truth: {len(persons)} persons with identifiers -> {len(profiles)} profiles; "
        f"{pure / len(profiles):.1%} of profiles hold one person only; "
        f"{whole / len(persons):.1%} of persons are exactly one profile"
    )
    # Deterministic rules should not fuse different people; they cannot join everything (name variants,
    # visitors who never log in need the probabilistic stage), so the profile count is only bounded.
    assert pure / len(profiles) >= 0.95
    assert len(persons) <= len(profiles) <= 3 * len(persons)
    assert whole / len(persons) >= 0.4
