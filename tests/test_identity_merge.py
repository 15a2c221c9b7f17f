"""Merge requests: the identity core's ``merge`` and the identity stage applying requests from the log.

Two CRM contacts of one person under two CRM ids share no identifier, and the rules allow one CRM id
per profile, so resolution keeps them apart; a merge request (the matcher's or an operator's) joins
them, survives a replay, and does not overrule an operator's split.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_identity_processor import Pipeline
from test_profiles import event

from patron.errors import PatronError
from patron.identity import IdentityState, default_rules, rebuild, resolve, split
from patron.identity.events import MERGE_REFUSED, PROFILES_MERGED, identity_event_id
from patron.identity.merge import MERGE_SPLIT_REASON, merge
from patron.identity.processor import merge_request
from patron.streams.log import EVENTS_TOPIC
from patron.streams.topology import IDENTITY_TOPIC

RULES = default_rules()
AT = datetime(2024, 6, 1, tzinfo=UTC)
CRM_1, CRM_2 = ("external:crm_id", "C-1"), ("external:crm_id", "C-2")


def crm_contacts() -> list[dict]:
    return [
        event(1, 0, {"external_ids": {"crm_id": "C-1"}, "email": "john.smith@acme.com"}, "identify", "crm",
              first_name="John", last_name="Smith", company="ACME Corporation"),
        event(2, 5, {"external_ids": {"crm_id": "C-2"}}, "identify", "crm",
              first_name="J.", last_name="Smith", company="Acme Corp"),
        event(3, 9, {"external_ids": {"crm_id": "C-3"}}, "identify", "crm", first_name="Mary", last_name="Jones"),
    ]  # fmt: skip


def resolved() -> tuple[IdentityState, list]:
    state, events = IdentityState(), []
    for source in crm_contacts():
        _, emitted, _ = resolve(state, source, RULES)
        events += emitted
    return state, events


def test_a_request_merges_two_profiles_beyond_the_identifier_limit():
    state, history = resolved()
    first, second = state.profile_of(*CRM_1), state.profile_of(*CRM_2)
    assert first != second
    _, events = merge(state, (CRM_2, CRM_1), request_id="req-1", at=AT)
    (merged,) = events
    # the survivor is the profile seen first, whichever the request names first
    assert (merged.kind, merged.profile_id, merged.other_profile_id) == (PROFILES_MERGED, first, second)
    assert merged.event_id == identity_event_id("req-1", PROFILES_MERGED, 0) and merged.cause_id == "req-1"
    assert merged.identifiers == (CRM_2,)
    assert state.identifiers(first)["external:crm_id"] == ["C-1", "C-2"]  # over the limit of 1, by request
    assert state == rebuild(history + events)
    # asked again (or through the other identifier): already one profile, nothing happens
    assert merge(state, (CRM_1, CRM_2), request_id="req-2", at=AT)[1] == []


def test_chained_requests_follow_earlier_merges():
    state, _ = resolved()
    merge(state, (CRM_1, CRM_2), request_id="a", at=AT)
    merge(state, (CRM_2, ("external:crm_id", "C-3")), request_id="b", at=AT)
    assert len(state.profiles) == 1


def test_an_operator_split_is_not_overruled_and_unknown_identifiers_are_errors():
    state, _ = resolved()
    merge(state, (CRM_1, CRM_2), request_id="m-1", at=AT)
    survivor = state.profile_of(*CRM_1)
    split(state, survivor, CRM_2, RULES, request_id="s-1", at=AT)
    before = IdentityState.from_bytes(state.to_bytes())
    _, (refused,) = merge(state, (CRM_1, CRM_2), request_id="m-2", at=AT)
    assert (refused.kind, refused.reason) == (MERGE_REFUSED, MERGE_SPLIT_REASON)
    assert refused.other_profile_id == state.profile_of(*CRM_2)
    assert state == before
    with pytest.raises(PatronError, match=r"merge m-3: no profile holds the external:crm_id named"):
        merge(state, (CRM_1, ("external:crm_id", "C-404")), request_id="m-3", at=AT)


@pytest.fixture
def pipeline(data_dir: Path) -> Pipeline:
    return Pipeline(data_dir)


def test_the_identity_stage_applies_a_request_from_the_log_and_replays_it(pipeline: Pipeline, data_dir: Path):
    pipeline.append(crm_contacts())
    pipeline.run()
    profiles = pipeline.live_profiles()
    by_crm = {p["identifiers"]["external:crm_id"][0]: key for key, p in profiles.items()}
    request = merge_request("pair:test", (by_crm["C-2"], by_crm["C-1"]), (CRM_2, CRM_1), at=AT)
    pipeline.append([request])
    again = merge_request("pair:test", (by_crm["C-2"], by_crm["C-1"]), (CRM_2, CRM_1), at=datetime.now(UTC))
    assert again["envelope"]["event_id"] == request["envelope"]["event_id"]  # one decision, one request
    assert pipeline.log.append(EVENTS_TOPIC, [pipeline.codec.message(again)]).duplicates == 1
    pipeline.run()
    live = pipeline.live_profiles()
    assert len(live) == 2
    joined = live[by_crm["C-1"]]
    assert joined["identifiers"]["external:crm_id"] == ["C-1", "C-2"]
    assert joined["traits"]["first_name"]["value"] == "J."  # the newer CRM record wins the trait
    assert joined["events"] == 2
    request_id = request["envelope"]["event_id"]
    (outcome,) = [
        e for e in pipeline.topic(IDENTITY_TOPIC) if e["payload"].get("cause_event_id") == request_id
    ]
    assert outcome["envelope"]["event_type"] == PROFILES_MERGED
    assert outcome["payload"]["merged_profile_id"] == by_crm["C-2"]
    incremental = pipeline.snapshot()
    pipeline.runner.reset()
    replay = Pipeline(data_dir)
    replay.run()
    assert replay.snapshot() == incremental


def test_a_request_the_graph_cannot_apply_is_reported_not_dropped(pipeline: Pipeline):
    pipeline.append(crm_contacts())
    pipeline.run()
    request = merge_request("pair:bad", ("p-1", "p-2"), (CRM_1, ("email", "nobody@example.com")), at=AT)
    pipeline.append([request])
    pipeline.run()
    (refusal,) = [e for e in pipeline.topic(IDENTITY_TOPIC) if e["envelope"]["event_type"] == MERGE_REFUSED]
    assert refusal["payload"]["cause_event_id"] == request["envelope"]["event_id"]
    assert "no profile holds the email named in the request" in refusal["payload"]["reason"]
    assert len(pipeline.live_profiles()) == 3
