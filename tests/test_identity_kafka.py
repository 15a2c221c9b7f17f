"""The issue's customer scenario through ``patron run`` (embedded) and ``patron worker`` (Kafka): same profiles.

Four source files (a web visitor who later logs in, a shop export with customer ids, a helpdesk
export whose email differs in case and spacing and whose phone is in local format, a consent
feed; a second shop customer and a second web visitor besides) are ingested twice with the
installed ``patron`` command: into an embedded data directory, then run with
``patron run --until-caught-up``; and into a fresh tansu broker (``--broker kafka://``), processed
by a ``patron worker`` subprocess that is stopped once its consumer group has committed the end of
every topic it reads.

The worker keeps its profiles in a faust table; they are read back from that table's changelog
topic (what a restarted worker recovers) and summarised with the same pure projection code
(``projections.profiles.summary``) the embedded side uses.

What is guaranteed equal, and asserted: the set of profiles as identifiers by kind, traits, event
counts (total, by type, by source), consent and first/last seen. Profile ids are *not* guaranteed
equal: an id is uuid5 of the identifier that created the profile, and a merge keeps the profile
seen first by event time (ties: the smaller id), so on Kafka, where the rekey topic interleaves the
four ``patron.events`` partitions in whatever order they arrive, a person's events can be applied in
another order than embedded (e.g. the login before the first page view) and the surviving profile
be named by another of her identifiers. What is guaranteed, and asserted, is that every profile id,
on both sides, is derived from one of that profile's own identifiers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import _start_tansu
from test_ingest import PATRON, patron, write
from test_profile_cli import (
    CONSENT_JSONL,
    CONSENT_MAPPING,
    HELPDESK_CSV,
    HELPDESK_MAPPING,
    SHOP_CSV,
    SHOP_MAPPING,
    WEB_JSONL,
    WEB_MAPPING,
    ok,
)

from patron.identity.resolver import profile_id_for
from patron.identity.rules import default_rules
from patron.projections.profile_rules import load_profile_rules
from patron.projections.profiles import summary
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC
from patron.streams.state import read_changelog, read_store
from patron.streams.topology import IDENTITY_INPUT_TOPIC, PROFILE_EVENTS_TOPIC

PLAN = load_profile_rules().plan
IDENTITY_PLAN = default_rules().plan
CAUGHT_UP_TIMEOUT_S = 40.0
WORKER_TOPICS = (EVENTS_TOPIC, IDENTITY_INPUT_TOPIC, PROFILE_EVENTS_TOPIC)
"""What the default topology's worker consumes: the rekey agent, identity, profiles."""


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test alone: the topology's topic names are fixed, the session broker is shared."""
    process, bootstrap = _start_tansu(tmp_path / "tansu.log")
    try:
        yield bootstrap
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def sources(tmp_path: Path) -> tuple[list[str], Path]:
    """The four source files and their mapping directory."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    files = []
    for name, mapping, content in [
        ("web.jsonl", WEB_MAPPING, WEB_JSONL),
        ("shop.csv", SHOP_MAPPING, SHOP_CSV),
        ("helpdesk.csv", HELPDESK_MAPPING, HELPDESK_CSV),
        ("consent.jsonl", CONSENT_MAPPING, CONSENT_JSONL),
    ]:
        write(mappings / f"{Path(name).stem}.yaml", mapping)
        files.append(str(write(tmp_path / name, content)))
    return files, mappings


def ingest(data_dir: Path, files: list[str], mappings: Path, *broker: str) -> int:
    """``patron ingest`` of every file; the number of events accepted (nothing may be rejected)."""
    summary_ = json.loads(
        ok(patron(data_dir, *broker, "ingest", *files, "--mapping-dir", str(mappings), "--json"))
    )
    assert summary_["totals"]["rejected"] == 0, summary_["rejections"]
    return summary_["totals"]["accepted"]


def embedded_profiles(data_dir: Path) -> dict[str, dict[str, Any]]:
    log = LocalLog(data_dir)
    try:
        stored = read_store(log, "profiles", "profiles")
    finally:
        log.close()
    return {key: summary(key, value, PLAN) for key, value in stored.items() if "merged_into" not in value}


def kafka_profiles(log: KafkaLog, app_id: str) -> dict[str, dict[str, Any]]:
    """The worker's profiles table folded from its changelog topic, summarised like the embedded one."""
    table = read_changelog(log, app_id, "profiles", "profiles")
    return {key: summary(key, value, PLAN) for key, value in table.items() if "merged_into" not in value}


def wait_until_caught_up(log: KafkaLog, app_id: str, worker: subprocess.Popen[bytes]) -> None:
    """Until the group has committed the end of every input topic twice in a row (a stage that has
    just emitted would otherwise look done before its downstream stage has seen the records)."""
    deadline = time.monotonic() + CAUGHT_UP_TIMEOUT_S
    settled = 0
    while settled < 2:
        assert worker.poll() is None, "the worker exited early"
        assert time.monotonic() < deadline, f"the worker did not catch up in {CAUGHT_UP_TIMEOUT_S:g}s"
        settled = settled + 1 if log.group_lag(app_id, WORKER_TOPICS) == 0 else 0
        time.sleep(0.5)


def without_ids(profiles: dict[str, dict[str, Any]]) -> list[str]:
    """The profiles as a comparable multiset with the profile ids left out."""
    return sorted(
        orjson.dumps({k: v for k, v in p.items() if k != "profile_id"}).decode() for p in profiles.values()
    )


def named_by_own_identifier(profile: dict[str, Any]) -> bool:
    own = {
        profile_id_for(IDENTITY_PLAN, kind, value)
        for kind, values in profile["identifiers"].items()
        for value in values
    }
    return profile["profile_id"] in own


def test_the_worker_on_kafka_builds_the_profiles_patron_run_builds(
    tmp_path: Path, sources: tuple[list[str], Path], fresh_broker: str
) -> None:
    files, mappings = sources
    embedded_dir, kafka_dir = tmp_path / "embedded", tmp_path / "kafka"
    accepted = ingest(embedded_dir, files, mappings)
    ok(patron(embedded_dir, "run", "--until-caught-up"))
    want = embedded_profiles(embedded_dir)

    broker = ("--broker", f"kafka://{fresh_broker}")
    assert ingest(kafka_dir, files, mappings, *broker) == accepted
    app_id = f"patron-e2e-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [str(PATRON), "--data-dir", str(kafka_dir), *broker, "worker", "--app-id", app_id,
         "--session-timeout", "6"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )  # fmt: skip
    log = KafkaLog(fresh_broker)
    try:
        wait_until_caught_up(log, app_id, worker)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr.decode(errors="replace")[-3000:]
        got = kafka_profiles(log, app_id)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()

    # Jo (web visitor, login, shop 9001, helpdesk email and phone), Kim (shop 9002), the other visitor.
    assert len(want) == 3, want
    jo = next(p for p in want.values() if p["identifiers"].get("user_id") == ["u-1001"])
    assert jo["identifiers"]["phone"] == ["+49301234567"] and jo["events"] == 7
    assert without_ids(got) == without_ids(want)
    assert all(named_by_own_identifier(p) for p in [*want.values(), *got.values()]), (want, got)
