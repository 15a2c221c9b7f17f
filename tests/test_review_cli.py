"""``patron identity match`` and ``patron identity review`` as an operator runs them on real files.

A CRM export holds John Smith three times under three CRM ids ("John Smith, ACME Corporation",
"J. Smith, Acme Corp", "Jon Smith, Acme", promoted and moved to Munich), a namesake John Smith at Acme in
Hamburg, and Mary Jones. No two of them share an identifier, so ``patron run`` keeps five profiles;
the matcher merges the sure pair, queues the grey zone, and the operator's decisions stick.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_ingest import cli, write
from test_profile_cli import run_cli

from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, scan

CRM_MAPPING = """\
source: crm
default_region: DE
event_type: identify
event_id: [crm_id, updated_at]
fields:
  occurred_at: updated_at
  identifiers.external_ids.crm_id: crm_id
  identifiers.email: email
  payload.first_name: first_name
  payload.last_name: last_name
  payload.company: company
  payload.title: title
  payload.city: city
  payload.country: country
"""
CRM_CSV = """\
crm_id,first_name,last_name,company,title,city,country,email,updated_at
C-1,John,Smith,ACME Corporation,CTO,Berlin,DE,john.smith@acme.com,2024-05-01T10:00:00Z
C-2,J.,Smith,Acme Corp,CTO,Berlin,DE,,2024-05-02T10:00:00Z
C-3,Mary,Jones,Globex Inc.,Buyer,Hamburg,DE,mary.jones@globex.com,2024-05-03T10:00:00Z
C-4,Jon,Smith,Acme,VP Engineering,Munich,DE,,2024-05-04T10:00:00Z
C-5,John,Smith,Acme Corp,Founder,Hamburg,DE,,2024-05-05T10:00:00Z
"""


@pytest.fixture
def crm(tmp_path: Path, data_dir: Path) -> Path:
    """The CRM export ingested and processed: five profiles, none sharing an identifier."""
    mapping = write(tmp_path / "crm.yaml", CRM_MAPPING)
    run_cli(data_dir, "ingest", str(write(tmp_path / "crm.csv", CRM_CSV)), "--mapping", str(mapping))
    run_cli(data_dir, "run")
    return data_dir


def match(data_dir: Path, *options: str) -> dict[str, Any]:
    return json.loads(run_cli(data_dir, "identity", "match", "--json", *options))


def profile_of(data_dir: Path, crm_id: str) -> dict[str, Any]:
    return json.loads(run_cli(data_dir, "profile", crm_id, "--kind", "crm_id", "--json"))


def crm_ids(data_dir: Path, crm_id: str) -> list[str]:
    return profile_of(data_dir, crm_id)["identifiers"]["external:crm_id"]


def pair_of(pairs: list[dict[str, Any]], data_dir: Path, crm_a: str, crm_b: str) -> dict[str, Any]:
    wanted = {profile_of(data_dir, crm_a)["profile_id"], profile_of(data_dir, crm_b)["profile_id"]}
    (pair,) = [p for p in pairs if {p["a"], p["b"]} == wanted]
    return pair


def test_match_merges_the_sure_pair_and_queues_the_grey_zone(crm: Path):
    first = match(crm)
    assert first["profiles"] == 5
    (auto,) = first["auto_merge"]
    assert pair_of(first["auto_merge"], crm, "C-1", "C-2") == auto
    fields = {f["field"]: f for f in auto["fields"]}
    assert (fields["first_name"]["a"], fields["first_name"]["b"]) in {("John", "J."), ("J.", "John")}
    assert fields["company"]["similarity"] == 1.0 and fields["company"]["points"] > 0
    assert auto["score"] >= first["thresholds"]["auto_merge"]
    review = {p["pair_id"] for p in first["review"]}
    assert review and pair_of(first["review"], crm, "C-1", "C-5")["pair_id"] in review
    assert all(
        first["thresholds"]["review"] <= p["score"] < first["thresholds"]["auto_merge"]
        for p in first["review"]
    )

    # Nothing changed yet: the merge is a request on the log, with the pair as its cause.
    assert crm_ids(crm, "C-2") == ["C-2"]
    log = LocalLog(crm)
    try:
        requests = [r for r in scan(log, EVENTS_TOPIC) if b"pair:" + auto["pair_id"].encode() in r.value]
    finally:
        log.close()
    assert len(requests) == 1
    # Matching again before `patron run` requests nothing twice.
    again = match(crm)
    assert (again["auto_merged"], again["merge_already_requested"]) == (0, 1)

    run_cli(crm, "run")
    assert crm_ids(crm, "C-2") == ["C-1", "C-2"]
    after = match(crm)
    assert after["profiles"] == 4 and after["earlier_merges_applied"] == 1
    shown = run_cli(crm, "identity", "show", "C-2", "--kind", "crm_id")
    assert "merged into" in shown


def test_review_lists_explanations_and_decisions_stick(crm: Path):
    match(crm)
    run_cli(crm, "run")  # John Smith / J. Smith auto-merged
    pairs = match(crm)["review"]
    moved = pair_of(pairs, crm, "C-1", "C-4")["pair_id"]  # the same John, after a move to Munich
    namesake = pair_of(pairs, crm, "C-1", "C-5")["pair_id"]  # another John Smith at Acme

    listing = run_cli(crm, "identity", "review")
    for pair_id in (moved, namesake):
        assert f"pair {pair_id}" in listing
    for text in ("first_name", "company", "Munich", "Hamburg", "total now"):
        assert text in listing
    lines = [json.loads(line) for line in run_cli(crm, "identity", "review", "--json").splitlines()]
    assert {line["pair_id"] for line in lines} == {p["pair_id"] for p in pairs}
    assert all(line["explanation"] for line in lines)

    run_cli(crm, "identity", "review", "accept", moved, "--reason", "promoted and moved to Munich")
    run_cli(crm, "identity", "review", "reject", namesake.upper(), "--reason", "different person")
    code, _, error = cli(crm, "identity", "review", "reject", moved)
    assert code == 2 and "is merge requested already" in error and "patron identity split" in error
    code, _, error = cli(crm, "identity", "review", "accept", "000000000000")
    assert code == 2 and "no pair '000000000000'" in error

    run_cli(crm, "run")
    assert crm_ids(crm, "C-4") == ["C-1", "C-2", "C-4"]
    assert crm_ids(crm, "C-5") == ["C-5"]
    final = match(crm)
    # The namesake is never proposed again, also not against the profile C-4 joined.
    assert final["review"] == [] and final["auto_merge"] == []
    assert final["rejected_before"] >= 1
    listing = cli(crm, "identity", "review")
    assert listing[0] == 0
    db = sqlite3.connect(crm / "matching.db")
    try:
        decisions = dict(db.execute("SELECT pair_id, reason FROM pairs WHERE decided_by = 'operator'"))
    finally:
        db.close()
    assert decisions == {moved: "promoted and moved to Munich", namesake: "different person"}


def test_thresholds_from_the_command_line_and_a_dry_run(crm: Path):
    dry = match(crm, "--dry-run", "--auto-merge", "99")
    assert dry["dry_run"] and dry["auto_merge"] == [] and len(dry["review"]) >= 2
    assert run_cli(crm, "identity", "review", "--json") == ""  # a dry run stores nothing
    code, _, error = cli(crm, "identity", "match", "--review", "50")
    assert code == 2 and "review (50.0) must not be above auto_merge (20.0)" in error
    table = run_cli(crm, "identity", "match", "--auto-merge", "99")
    assert "queued for review" in table
    run_cli(crm, "run")
    assert crm_ids(crm, "C-2") == ["C-2"]  # nothing was auto-merged
