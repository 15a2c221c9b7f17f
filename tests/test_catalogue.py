"""The shipped Avro catalogue: every event type is present, documented, PII-marked and round-trips.

These tests read the real ``schemas/avro`` files and encode through the real codec and the
embedded SQLite registry, so a schema typo, a missing doc or a field that cannot carry a
realistic value fails here rather than in a connector.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from patron.events.codec import EventCodec
from patron.schemas.catalogue import AVRO_DIR, EVENT_NAMESPACE, default_catalogue
from patron.schemas.registry import FileRegistry

T0 = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)
T1 = datetime(2024, 6, 17, 9, 30, 12, 345678, tzinfo=UTC)
MONTHLY = {
    "subscription_id": "sub_1PJx9QL",
    "plan": "pro",
    "amount": 29.0,
    "currency": "EUR",
    "billing_interval": "month",
    "period_start": T0,
    "period_end": T1,
}
EMAIL = {
    "campaign_id": "cmp-2024-05-spring",
    "message_id": "msg-8f2c1a",
    "subject": "Spring sale: 20% off running shoes",
    "list_id": "newsletter-de",
}
CAUSE = "5f0c2b1e-9d7a-4c3e-8b21-0a6f4e9d1c55"
PROFILE_A = "0b9a7c1d-2e3f-5a4b-8c6d-7e8f9a0b1c2d"
PROFILE_B = "9c8b7a6d-5e4f-5a3b-9c2d-1e0f9a8b7c6d"
LINE = {"product_id": "P-1001", "sku": "RUN-42-BLU", "name": "Trail Runner", "category": "Shoes/Running"}

# One realistic payload per event type, with every optional field filled so each type is exercised.
SAMPLES: dict[str, dict[str, Any]] = {
    "identify": {
        "first_name": "Jana",
        "last_name": "Novak",
        "name": "Jana Novak",
        "company": "Acme GmbH",
        "title": "Head of Operations",
        "address": "Hauptstr. 5, 10115 Berlin",
        "city": "Berlin",
        "country": "DE",
        "birthday": date(1988, 3, 14),
        "created_at": T0,
        "traits": {"newsletter": "true", "shoe_size": "39"},
    },
    "order_completed": {
        "order_id": "O-100234",
        "revenue": 119.9,
        "currency": "EUR",
        "tax": 19.14,
        "shipping": 4.95,
        "discount": 10.0,
        "coupon": "SPRING10",
        "items": [{**LINE, "quantity": 1, "price": 119.9}],
    },
    "page_viewed": {
        "url": "https://shop.example.com/running?ref=nav",
        "path": "/running",
        "title": "Running shoes",
        "referrer": "https://www.google.com/",
        "name": "Category",
        "category": "Shop",
    },
    "screen_viewed": {"name": "Checkout", "category": "Shop", "previous_screen": "Cart"},
    "product_viewed": {
        "product_id": "P-1001",
        "sku": "RUN-42-BLU",
        "name": "Trail Runner",
        "category": "Shoes/Running",
        "brand": "Stride",
        "price": 119.9,
        "currency": "EUR",
        "url": "https://shop.example.com/p/trail-runner",
    },
    "cart_updated": {
        "cart_id": "C-77a1",
        "items": [
            {**LINE, "quantity": 2, "price": 119.9},
            {
                "product_id": "P-2002",
                "sku": None,
                "name": "Running socks",
                "category": None,
                "quantity": 1,
                "price": 9.5,
            },
        ],
        "value": 249.3,
        "currency": "EUR",
    },
    "refund_issued": {
        "order_id": "O-100234",
        "refund_id": "re_3PJz",
        "amount": 119.9,
        "currency": "EUR",
        "reason": "damaged",
    },
    "payment_failed": {
        "payment_id": "ch_3PK0a",
        "order_id": None,
        "subscription_id": "sub_1PJx9QL",
        "amount": 29.0,
        "currency": "EUR",
        "failure_code": "insufficient_funds",
        "failure_message": "Your card has insufficient funds.",
        "attempt": 2,
    },
    "subscription_started": {**MONTHLY, "trial_end": T0},
    "subscription_renewed": {**MONTHLY, "renewal_number": 3},
    "subscription_cancelled": {
        **MONTHLY,
        "at_period_end": True,
        "reason": "too_expensive",
        "comment": "We are cutting tools this quarter, Jana",
    },
    "logged_in": {"method": "sso", "mfa": True},
    "feature_used": {"feature": "export_csv", "count": 4},
    "ticket_opened": {
        "ticket_id": "T-5531",
        "subject": "Package for Jana Novak never arrived",
        "priority": "high",
        "category": "shipping",
        "channel": "email",
    },
    "ticket_first_responded": {"ticket_id": "T-5531", "agent_id": "agent-17", "response_seconds": 5_400},
    "ticket_resolved": {
        "ticket_id": "T-5531",
        "resolution": "solved",
        "resolution_seconds": 172_800,
        "reopened_count": 1,
    },
    "survey_answered": {
        "survey_id": "nps-q2",
        "kind": "NPS",
        "score": 9,
        "comment": "Fast delivery, friendly support.",
        "ticket_id": None,
    },
    "email_sent": dict(EMAIL),
    "email_opened": dict(EMAIL),
    "email_clicked": {**EMAIL, "url": "https://shop.example.com/sale?utm_campaign=spring"},
    "email_unsubscribed": {**EMAIL, "reason": "too_frequent"},
    "consent_changed": {
        "purpose": "marketing",
        "channel": "email",
        "granted": False,
        "basis": "consent",
        "method": "preference_center",
        "policy_version": "2024-05",
    },
    "erasure_requested": {"request_id": "ER-0091", "requested_by": "subject", "reason": "account_closed"},
    "group": {
        "group_id": "acct-42",
        "name": "Acme GmbH",
        "industry": "retail",
        "employees": 250,
        "plan": "enterprise",
        "traits": {"region": '"EMEA"', "seats": "40"},
    },
    "alias": {"previous_id": "anon-6c1f0e"},
    "custom_event": {
        "name": "Wishlist Shared",
        "properties": {"wishlist_id": '"W-9"', "items": "3", "public": "true"},
    },
    "lead_created": {"lead_id": "L-3012", "lead_source": "webinar", "stage": "mql"},
    "identifier_linked": {
        "cause_event_id": CAUSE,
        "profile_id": PROFILE_A,
        "identifiers": [{"kind": "email", "value": "jana.novak@example.com"}],
        "created": False,
    },
    "profiles_merged": {
        "cause_event_id": CAUSE,
        "profile_id": PROFILE_A,
        "merged_profile_id": PROFILE_B,
        "identifiers": [
            {"kind": "external:shop_customer_id", "value": "9001"},
            {"kind": "email", "value": "jana.novak@example.com"},
        ],
    },
    "merge_refused": {
        "cause_event_id": CAUSE,
        "profile_id": PROFILE_A,
        "other_profile_id": PROFILE_B,
        "identifiers": [{"kind": "email", "value": "jana.novak@example.com"}],
        "conflicts": [{"kind": "user_id", "value": "u-1842"}, {"kind": "user_id", "value": "u-2002"}],
        "reason": "email links to a profile whose user_id differs",
    },
    "profile_split": {
        "cause_event_id": CAUSE,
        "profile_id": PROFILE_A,
        "identifiers": [{"kind": "phone", "value": "+4915112345678"}],
        "reason": "two people share the household phone",
        "new_profile_id": PROFILE_B,
        "error": None,
    },
    "identifier_blocked": {
        "cause_event_id": CAUSE,
        "identifiers": [{"kind": "email", "value": "test@test.com"}],
        "reason": "email value is on the blocklist of the identity rules",
    },
    "profile_absorbed": {
        "cause_event_id": CAUSE,
        "profile_id": PROFILE_A,
        "absorbed_profile_id": PROFILE_B,
        "state": '{"ids": {"email": ["jana.novak@example.com"]}, "parts": {}}',
    },
    "deal_closed": {
        "deal_id": "D-880",
        "lead_id": "L-3012",
        "won": True,
        "amount": 24_000.0,
        "currency": "EUR",
        "created_at": T0,
        "lost_reason": None,
    },
    "lifecycle_stage_changed": {
        "profile_id": PROFILE_A,
        "from_stage": "repeat",
        "to_stage": "at_risk",
        "since": T0,
        "as_of": T1,
    },
    "health_alert_raised": {
        "profile_id": PROFILE_A,
        "account": "Acme GmbH",
        "rule": "high_value_at_risk",
        "score": 12.9,
        "status": "red",
        "factors": '{"usage": {"score": 0.0, "reason": "logins + feature uses -80%"}}',
        "as_of": T1,
    },
    "segment_entered": {
        "profile_id": PROFILE_A,
        "segment": "at-risk-no-email",
        "version": 2,
        "reason": "rfm.segment = 'At Risk' (is 'At Risk') and emails_opened.last_30d = 0 (is 0)",
        "traits": {"traits.email": '"ann@example.com"', "clv.value": "412.0"},
        "channels": ["email"],
        "suppressed": [{"channel": "sms", "reason": "no marketing consent for sms"}],
        "evaluated_at": T1,
        "cause_event_id": CAUSE,
    },
    "segment_exited": {
        "profile_id": PROFILE_A,
        "segment": "at-risk-no-email",
        "version": 2,
        "reason": "merged into 7e8f9a0b-1c2d-5a4b-8c6d-0b9a7c1d2e3f",
        "traits": {},
        "channels": ["email", "sms"],
        "suppressed": [],
        "evaluated_at": T1,
        "cause_event_id": CAUSE,
    },
    "trigger_fired": {
        "profile_id": PROFILE_A,
        "trigger": "abandoned_cart",
        "action": "cart_reminder",
        "version": 1,
        "reason": "cart.abandoned_at not within last 4h (is 2024-06-17T05:00:00+00:00)",
        "traits": {"cart.value": "59.9"},
        "channels": [],
        "suppressed": [{"channel": "email", "reason": "frequency cap: 1 per 7d reached"}],
        "evaluated_at": T1,
        "cause_event_id": CAUSE,
    },
    "profile_scored": {
        "profile_id": PROFILE_A,
        "as_of": T1,
        "rfm_segment": "At Risk",
        "rfm_r": 1,
        "rfm_f": 4,
        "rfm_m": 5,
        "health_score": 31.5,
        "health_status": "red",
        "clv": 412.0,
        "p_alive": 0.37,
        "lifecycle_stage": "at_risk",
    },
    "segment_timer_fired": {"profile_id": PROFILE_A, "due_at": T1, "why": "window"},
}

EXPECTED_TYPES = set(SAMPLES)

ENVELOPE_PII = {
    "envelope.identifiers.user_id",
    "envelope.identifiers.anonymous_id",
    "envelope.identifiers.email",
    "envelope.identifiers.phone",
    "envelope.identifiers.device_id",
    "envelope.identifiers.external_ids",
    "envelope.context.ip",
}
PAYLOAD_PII = {
    "identify": {"first_name", "last_name", "name", "address", "birthday", "traits"},
    "subscription_cancelled": {"comment"},
    "ticket_opened": {"subject"},
    "survey_answered": {"comment"},
    "alias": {"previous_id"},
    "custom_event": {"properties"},
    "identifier_linked": {"identifiers"},
    "profiles_merged": {"identifiers"},
    "merge_refused": {"identifiers", "conflicts"},
    "profile_split": {"identifiers"},
    "identifier_blocked": {"identifiers"},
    "profile_absorbed": {"state"},
    "segment_entered": {"traits"},
    "segment_exited": {"traits"},
    "trigger_fired": {"traits"},
}


def event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "occurred_at": T0,
            "received_at": T1,
            "source": "shop",
            "identifiers": {
                "user_id": "u-1842",
                "anonymous_id": "anon-6c1f0e",
                "email": "jana.novak@example.com",
                "phone": "+4915112345678",
                "device_id": None,
                "external_ids": {"crm_id": "C-42"},
            },
            "context": {
                "channel": "web",
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0",
                "locale": "de-DE",
                "campaign": {
                    "name": "spring",
                    "source": "newsletter",
                    "medium": "email",
                    "term": None,
                    "content": None,
                },
            },
        },
        "payload": payload,
    }


def fields_of(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every field of every record nested in ``schema`` (through unions, arrays, maps), with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += fields_of(branch, path)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                found.append((f"{path}{field['name']}", field))
                found += fields_of(field["type"], f"{path}{field['name']}.")
        elif schema.get("type") == "array":
            found += fields_of(schema["items"], path)
        elif schema.get("type") == "map":
            found += fields_of(schema["values"], path)
    return found


def named_types(schema: Any, namespace: str = "") -> list[str]:
    """Full names of the types *defined* (not merely referenced) in one raw .avsc schema."""
    found: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            found += named_types(branch, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            namespace = schema.get("namespace", namespace)
            name = schema["name"]
            found.append(name if "." in name else f"{namespace}.{name}")
        if kind == "record":
            for field in schema["fields"]:
                found += named_types(field["type"], namespace)
        elif kind == "array":
            found += named_types(schema["items"], namespace)
        elif kind == "map":
            found += named_types(schema["values"], namespace)
        elif isinstance(kind, dict | list):
            found += named_types(kind, namespace)
    return found


def test_catalogue_holds_exactly_the_expected_event_types():
    catalogue = default_catalogue()
    files = sorted(AVRO_DIR.glob(f"{EVENT_NAMESPACE}.*.avsc"))
    assert len(catalogue) == len(files)
    assert set(catalogue.event_types()) == EXPECTED_TYPES


def test_every_file_is_named_after_the_type_it_defines_and_names_are_unique():
    defined: dict[str, str] = {}
    for path in sorted(AVRO_DIR.glob("*.avsc")):
        raw = json.loads(path.read_text())
        names = named_types(raw)
        assert names[0] == path.name.removesuffix(".avsc"), f"{path.name} defines {names[0]}"
        for name in names:
            assert name not in defined, f"{name} is defined in both {defined[name]} and {path.name}"
            defined[name] = path.name


@pytest.mark.parametrize("event_type", sorted(EXPECTED_TYPES))
def test_event_is_envelope_plus_inline_payload(event_type: str):
    entry = default_catalogue().get(event_type)
    schema = entry.schema
    assert entry.full_name.startswith(f"{EVENT_NAMESPACE}.")
    assert entry.subject == entry.full_name
    assert schema.get("doc"), f"{entry.full_name} has no doc"
    assert [f["name"] for f in schema["fields"]] == ["envelope", "payload"]
    envelope, payload = schema["fields"]
    assert envelope["type"]["name"] == "patron.common.Envelope"
    assert payload["type"]["type"] == "record"
    assert payload["type"]["name"] == f"{entry.full_name}Payload"


@pytest.mark.parametrize("event_type", sorted(EXPECTED_TYPES))
def test_every_field_at_every_level_has_a_doc(event_type: str):
    schema = default_catalogue().get(event_type).schema
    undocumented = [path for path, field in fields_of(schema) if not str(field.get("doc", "")).strip()]
    assert not undocumented, f"{event_type}: fields without a doc: {undocumented}"


@pytest.mark.parametrize("event_type", sorted(EXPECTED_TYPES))
def test_pii_marks_are_exactly_where_expected(event_type: str):
    pii = set(default_catalogue().get(event_type).pii_fields)
    expected_payload = {f"payload.{name}" for name in PAYLOAD_PII.get(event_type, set())}
    assert pii == ENVELOPE_PII | expected_payload


def test_survey_score_doc_states_both_scales():
    payload = dict(fields_of(default_catalogue().get("survey_answered").schema))
    assert "NPS 0-10" in payload["payload.score"]["doc"]
    assert "CSAT 1-5" in payload["payload.score"]["doc"]
    assert payload["payload.kind"]["type"]["symbols"] == ["NPS", "CSAT"]


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> EventCodec:
    return EventCodec(FileRegistry(Path(tmp_path_factory.mktemp("registry")) / "r.db"))


@pytest.mark.parametrize("event_type", sorted(EXPECTED_TYPES))
def test_realistic_sample_round_trips_through_the_codec(codec: EventCodec, event_type: str):
    original = event(event_type, SAMPLES[event_type])
    data = codec.encode(original)
    assert data[0] == 0
    assert codec.decode(data) == original
    assert codec.event_type_of(data) == event_type
    assert default_catalogue().get(event_type).subject in codec.registry.subjects()


@pytest.mark.parametrize("event_type", sorted(EXPECTED_TYPES))
def test_optional_fields_may_be_left_out(codec: EventCodec, event_type: str):
    """A source that sends only the required fields must still be encodable; defaults fill the rest."""
    payload_fields = default_catalogue().get(event_type).schema["fields"][1]["type"]["fields"]
    optional = {f["name"]: f["default"] for f in payload_fields if "default" in f}
    required = {k: v for k, v in SAMPLES[event_type].items() if k not in optional}
    decoded = codec.decode(codec.encode(event(event_type, required)))
    assert decoded["payload"] == {**required, **optional}


def test_a_value_outside_the_schema_is_refused(codec: EventCodec):
    bad = event("survey_answered", {**SAMPLES["survey_answered"], "kind": "CES"})
    with pytest.raises(ValueError):
        codec.encode(bad)
    missing = event("refund_issued", {k: v for k, v in SAMPLES["refund_issued"].items() if k != "amount"})
    with pytest.raises(ValueError):
        codec.encode(missing)
