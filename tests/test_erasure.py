"""``patron erase``: afterwards no personal value of the person is anywhere on disk, everyone else intact.

Generated multi-source data (web, shop, CRM, billing, support, email) goes through the real
commands: ingest, run, snapshot, a dead letter naming the person, ``patron erase``, snapshot.
Then every file under the data directory is searched: SQLite files (log, state, keys) and
JSON as bytes, Parquet files as their decoded rows.
"""

from __future__ import annotations

import getpass
import json
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from conftest import processed_data_dir
from test_ingest import cli

from patron.config import Settings
from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.events.codec import open_codec
from patron.projections.erasure import AUDIT_FILE
from patron.projections.pii import ACCESS_FILE
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, scan

UNIQUE_KINDS = ("user_id", "anonymous_id", "email", "phone", "device_id")


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return processed_data_dir(tmp_path_factory.mktemp("erasure"), 30, 60, 3)


@pytest.fixture
def data_dir(processed: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(processed, tmp_path / "data"))


def current(data_dir: Path) -> Path:
    root = data_dir / "snapshots"
    return root / json.loads((root / "manifest.json").read_text())["current"]


def people(snapshot: Path) -> dict[str, dict[str, Any]]:
    """Profile id -> its raw identifiers (kind -> values) and profile row, from the raw snapshot files."""
    found: dict[str, dict[str, Any]] = {}
    for row in pq.read_table(snapshot / "identities.parquet").to_pylist():
        found.setdefault(row["profile_id"], {"ids": {}})["ids"].setdefault(row["kind"], []).append(
            row["value"]
        )
    for row in pq.read_table(snapshot / "profiles.parquet").to_pylist():
        found.setdefault(row["profile_id"], {"ids": {}})["row"] = row
    return found


def searchable(person: dict[str, Any], everyone: dict[str, dict[str, Any]]) -> set[str]:
    """The person's identifier values, and their names when no one else has the same one."""
    values = {v for values in person["ids"].values() for v in values}
    for key in ("first_name", "last_name", "name"):
        mine = dict(person["row"]["traits"]).get(key)
        others = [
            dict(p["row"]["traits"]).get(key) for p in everyone.values() if p is not person and "row" in p
        ]
        if mine and mine not in others:
            values.add(json.loads(mine))
    return {value for value in values if len(value) >= 5}


def found_on_disk(data_dir: Path, values: set[str]) -> list[str]:
    """Where any of ``values`` occurs, in any case, in any file under ``data_dir``."""
    needles = {value.lower().encode() for value in values}
    hits = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data = orjson.dumps(pq.read_table(path).to_pylist(), default=str)
        lowered = data.lower()
        hits += [
            f"{path.relative_to(data_dir)}: {needle.decode()}" for needle in needles if needle in lowered
        ]
    return hits


def test_after_erasure_no_personal_value_is_anywhere_on_disk_and_everyone_else_is_intact(
    data_dir: Path,
) -> None:
    before = people(current(data_dir))
    with_email = [
        pid for pid, p in before.items() if "email" in p["ids"] and "phone" in p["ids"] and "row" in p
    ]
    victim_id, bystander_id = with_email[0], with_email[1]
    victim, bystander = before[victim_id], before[bystander_id]
    secrets_of_victim = searchable(victim, before)
    assert len(secrets_of_victim) >= 4, secrets_of_victim
    assert found_on_disk(data_dir, secrets_of_victim)  # they were there: the search can find them
    email, other_email = victim["ids"]["email"][0], bystander["ids"]["email"][0]

    log = LocalLog(data_dir)
    letters = [
        DeadLetter("shop", "file", "orders.csv:line 7", "bad amount", f"O-9,{email.upper()},abc".encode()),
        DeadLetter("shop", "file", "orders.csv:line 8", "bad amount", f"O-10,{other_email},abc".encode()),
    ]
    DeadLetterStore(log).add(letters)
    log.close()

    code, out, error = cli(data_dir, "erase", email, "--reason", "account_closed", "--yes")
    assert code == 0, error
    assert "data keys deleted" in out
    code, _, error = cli(data_dir, "snapshot")
    assert code == 0, error

    assert found_on_disk(data_dir, secrets_of_victim) == []
    code, _, error = cli(data_dir, "profile", email)
    assert code != 0 and "no profile holds" in error

    after = people(current(data_dir))
    assert victim_id not in after
    assert after[bystander_id] == bystander  # identifiers, traits, counts: unchanged
    assert set(after) == set(before) - {victim_id}  # nobody else lost or gained
    for older in sorted((data_dir / "snapshots").iterdir()):
        if older.is_dir():
            assert victim_id not in people(older)
            assert bystander_id in people(older)

    log = LocalLog(data_dir)
    try:
        remaining = {letter.location for letter in DeadLetterStore(log)}
        codec = open_codec(Settings.load(data_dir=data_dir))
        requests = [codec.decode(r.value) for r in scan(log, EVENTS_TOPIC)]
    finally:
        log.close()
    assert "orders.csv:line 8" in remaining and "orders.csv:line 7" not in remaining
    erased = [e for e in requests if e["envelope"]["event_type"] == "erasure_requested"]
    assert len(erased) == 1 and not any(
        v for k, v in erased[0]["envelope"]["identifiers"].items() if k != "external_ids"
    )
    assert erased[0]["payload"]["reason"] == "account_closed"  # the audit trail, without who
    audit = [orjson.loads(line) for line in (data_dir / AUDIT_FILE).read_bytes().splitlines()]
    assert len(audit) == 1 and audit[0]["profiles"] >= 1 and audit[0]["keys_deleted"] >= 3
    assert audit[0]["dead_letters_purged"] == 1 and audit[0]["snapshots_rewritten"] >= 1

    # analysts with the pii role see everyone else's raw values, and still nothing of the person
    (data_dir / ACCESS_FILE).write_text(f"roles:\n  pii:\n    users: [{getpass.getuser()}]\n")
    code, out, error = cli(
        data_dir, "sql", "--role", "pii", "--format", "csv", "SELECT value FROM identities"
    )
    assert code == 0, error
    assert other_email in out and email not in out


def test_erasure_needs_a_known_identifier_and_confirmation(data_dir: Path) -> None:
    code, _, error = cli(data_dir, "erase", "nobody@example.com", "--yes")
    assert code == 2 and "no profile holds" in error
    code, _, error = cli(data_dir, "erase", "nobody@example.com")
    assert code == 2 and "confirm with --yes" in error
