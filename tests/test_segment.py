"""Segment/RudderStack messages -> Patron events, checked against the real catalogue and codec.

Every produced event goes through the real validation (``validate_event``) and is encoded and
decoded by the real codec over an embedded registry, so a mapping that yields a field the Avro
schema does not have, or a value it cannot hold, fails here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from patron.connectors.segment import SegmentError, message_event_id, segment_to_events
from patron.events.codec import EventCodec
from patron.events.models import InvalidEvent, validate_event

RECEIVED = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def mapped(codec: EventCodec) -> Any:
    """Maps a message, validates its events and returns them as the codec reads them back."""

    def run(message: dict[str, Any], source: str = "web", **options: Any) -> list[dict[str, Any]]:
        events = segment_to_events(message, source, received_at=RECEIVED, **options)
        return [codec.decode(codec.encode(validate_event(event))) for event in events]

    return run


def test_order_completed_maps_spec_properties_and_keeps_the_rest_in_a_linked_companion(mapped: Any) -> None:
    message = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "messageId": "ajs-5f1c0e",
        "properties": {
            "order_id": "O-9",
            "revenue": 25.0,
            "total": 30.0,
            "currency": "eur",
            "tax": 4.0,
            "coupon": "SPRING",
            "affiliation": "Shop DE",
            "products": [
                {
                    "product_id": "P-1",
                    "sku": "S-1",
                    "name": "Shoe",
                    "price": 12.5,
                    "quantity": 2,
                    "brand": "Acme",
                },
                {"product_id": "P-2", "price": 0.0},
            ],
        },
    }
    order, companion = mapped(message)
    assert order["envelope"]["event_type"] == "order_completed"
    assert order["payload"]["order_id"] == "O-9"
    assert order["payload"]["revenue"] == 25.0  # revenue wins over total; total is kept in the companion
    assert order["payload"]["currency"] == "EUR"
    assert [(i["product_id"], i["quantity"], i["price"]) for i in order["payload"]["items"]] == [
        ("P-1", 2, 12.5),
        ("P-2", 1, 0.0),
    ]
    assert companion["envelope"]["event_type"] == "custom_event"
    assert companion["payload"]["name"] == "Order Completed"
    props = {k: orjson.loads(v) for k, v in companion["payload"]["properties"].items()}
    assert props == {
        "total": 30.0,
        "affiliation": "Shop DE",
        "products": [{"product_id": "P-1", "brand": "Acme"}],
        "$event_id": str(order["envelope"]["event_id"]),
        "$event_type": "order_completed",
    }
    assert companion["envelope"]["event_id"] != order["envelope"]["event_id"]
    # The same message mapped again (an SDK retry) gives the same ids for both events.
    again = segment_to_events(message, "web", received_at=RECEIVED + timedelta(seconds=3))
    assert [e["envelope"]["event_id"] for e in again] == [
        str(order["envelope"]["event_id"]),
        str(companion["envelope"]["event_id"]),
    ]
    assert order["payload"]["items"][0]["sku"] == "S-1"
    assert companion["payload"]["properties"]["affiliation"] == '"Shop DE"'


def test_a_fully_mapped_spec_event_has_no_companion(mapped: Any) -> None:
    events = mapped(
        {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": "a-1",
            "properties": {
                "product_id": "P-1",
                "name": "Shoe",
                "brand": "Acme",
                "price": 10,
                "currency": "USD",
            },
        }
    )
    assert len(events) == 1
    assert events[0]["envelope"]["event_type"] == "product_viewed"
    assert events[0]["payload"]["brand"] == "Acme"


@pytest.mark.parametrize(
    ("name", "properties", "event_type", "expected"),
    [
        (
            "Order Refunded",
            {"order_id": "O-1", "total": 9.5, "currency": "EUR"},
            "refund_issued",
            {"amount": 9.5},
        ),
        ("Signed In", {"method": "google"}, "logged_in", {"method": "google"}),
        ("Signed In", {}, "logged_in", {"method": "unspecified"}),
        ("Email Opened", {"email_id": "m-1", "email_subject": "Hi"}, "email_opened", {"message_id": "m-1"}),
        ("Email Delivered", {"email_id": "m-1", "campaign_id": "c-1"}, "email_sent", {"campaign_id": "c-1"}),
        (
            "Email Link Clicked",
            {"email_id": "m-1", "link_url": "https://x.example"},
            "email_clicked",
            {"url": "https://x.example"},
        ),
        (
            "Unsubscribed",
            {"email_id": "m-1", "reason": "too many"},
            "email_unsubscribed",
            {"reason": "too many"},
        ),
        (
            "Cart Viewed",
            {
                "cart_id": "c-1",
                "currency": "EUR",
                "products": [{"product_id": "P", "price": 2.5, "quantity": 4}],
            },
            "cart_updated",
            {"value": 10.0},
        ),
    ],
)
def test_spec_event_names_map_to_catalogue_types(
    name: str, properties: dict[str, Any], event_type: str, expected: dict[str, Any], mapped: Any
) -> None:
    (event,) = mapped({"type": "track", "event": name, "userId": "u", "properties": properties})
    assert event["envelope"]["event_type"] == event_type
    assert {k: event["payload"][k] for k in expected} == expected


def test_a_delta_like_product_added_stays_a_custom_event_with_json_encoded_properties(mapped: Any) -> None:
    (event,) = mapped(
        {
            "type": "track",
            "event": "Product Added",
            "userId": "u",
            "properties": {"cart_id": "c", "price": 2.5, "tags": ["a", "b"], "gift": None},
        }
    )
    assert event["envelope"]["event_type"] == "custom_event"
    assert event["payload"] == {
        "name": "Product Added",
        "properties": {"cart_id": '"c"', "price": "2.5", "tags": '["a","b"]', "gift": "null"},
    }


def test_patron_type_names_are_the_payload_and_unknown_keys_are_refused(mapped: Any) -> None:
    (event,) = mapped(
        {
            "type": "track",
            "event": "feature_used",
            "userId": "u",
            "properties": {"feature": "export", "count": 3},
        }
    )
    assert event["envelope"]["event_type"] == "feature_used"
    assert event["payload"] == {"feature": "export", "count": 3}
    (raw,) = segment_to_events(
        {
            "type": "track",
            "event": "feature_used",
            "userId": "u",
            "properties": {"feature": "x", "colour": "red"},
        },
        "web",
    )
    with pytest.raises(InvalidEvent, match=r"payload\.colour: unknown field"):
        validate_event(raw)


def test_identify_maps_traits_identifiers_and_keeps_the_rest_json_encoded(mapped: Any) -> None:
    (event,) = mapped(
        {
            "type": "identify",
            "userId": "u-7",
            "traits": {
                "email": "  Jana.Novak@Example.COM ",
                "phone": "+49 30 1234567",
                "firstName": "Jana",
                "lastName": "Novak",
                "birthday": "1988-03-14",
                "createdAt": "2023-01-02T03:04:05Z",
                "company": {"name": "Acme GmbH", "plan": "pro"},
                "address": {
                    "street": "Hauptstr. 5",
                    "postalCode": "10115",
                    "city": "Berlin",
                    "country": "DE",
                },
                "crm_id": 42,
                "plan": "gold",
            },
            "context": {"device": {"id": "dev-1"}, "externalIds": [{"id": "cus_9", "type": "stripe_id"}]},
        },
        external_id_traits=["crm_id"],
    )
    ids = event["envelope"]["identifiers"]
    assert ids["user_id"] == "u-7"
    assert ids["email"] == "jana.novak@example.com"
    assert ids["phone"] == "+49301234567"
    assert ids["device_id"] == "dev-1"
    assert ids["external_ids"] == {"crm_id": "42", "stripe_id": "cus_9"}
    payload = event["payload"]
    assert (payload["first_name"], payload["last_name"], payload["company"]) == ("Jana", "Novak", "Acme GmbH")
    assert payload["address"] == "Hauptstr. 5, 10115 Berlin"
    assert (payload["city"], payload["country"]) == ("Berlin", "DE")
    assert payload["birthday"] == date(1988, 3, 14)
    assert payload["created_at"] == datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert payload["traits"] == {"plan": '"gold"', "company": '{"plan":"pro"}'}
    assert event["payload"]["traits"]["plan"] == '"gold"'


def test_rudderstack_identify_traits_in_context_traits_are_the_identify_traits(mapped: Any) -> None:
    (event,) = mapped(
        {
            "type": "identify",
            "userId": "u-8",
            "channel": "server",
            "context": {
                "traits": {"email": "a@b.example", "name": "A B", "tier": 2},
                "library": {"name": "x"},
            },
        }
    )
    assert event["envelope"]["identifiers"]["email"] == "a@b.example"
    assert event["envelope"]["context"]["channel"] == "api"
    assert event["payload"]["name"] == "A B"
    assert event["payload"]["traits"] == {"tier": "2"}


def test_track_takes_email_from_context_traits_but_not_other_context(mapped: Any) -> None:
    (event,) = mapped(
        {
            "type": "track",
            "event": "Wishlist Shared",
            "anonymousId": "a-1",
            "context": {
                "traits": {"email": "x@y.example", "favourite": "blue"},
                "ip": "203.0.113.7",
                "userAgent": "Mozilla/5.0",
                "locale": "de-DE",
                "campaign": {"name": "spring", "source": "newsletter", "medium": "email"},
                "library": {"name": "analytics.js", "version": "5.0"},
                "os": {"name": "macOS"},
            },
        }
    )
    envelope = event["envelope"]
    assert envelope["identifiers"]["email"] == "x@y.example"
    assert envelope["context"] == {
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
    }


def test_page_uses_context_page_for_missing_fields_and_does_not_lose_custom_properties(mapped: Any) -> None:
    page, companion = mapped(
        {
            "type": "page",
            "anonymousId": "a-1",
            "name": "Pricing",
            "category": "Docs",
            "properties": {"title": "Pricing", "search": "?plan=pro", "variant": "B"},
            "context": {"page": {"url": "https://x.example/pricing?plan=pro", "path": "/pricing"}},
        }
    )
    assert page["envelope"]["event_type"] == "page_viewed"
    assert page["payload"] == {
        "url": "https://x.example/pricing?plan=pro",
        "path": "/pricing",
        "title": "Pricing",
        "referrer": None,
        "name": "Pricing",
        "category": "Docs",
    }
    # `search` is part of the url, so only `variant` needs the companion.
    assert set(companion["payload"]["properties"]) == {"variant", "$event_id", "$event_type"}
    assert companion["payload"]["name"] == "page"


def test_screen_group_and_alias(mapped: Any) -> None:
    (screen,) = mapped({"type": "screen", "userId": "u", "name": "Checkout", "category": "Shop"})
    assert screen["envelope"]["event_type"] == "screen_viewed"
    assert screen["envelope"]["context"]["channel"] == "app"
    assert screen["payload"]["name"] == "Checkout"
    (group,) = mapped(
        {
            "type": "group",
            "userId": "u",
            "groupId": "g-1",
            "traits": {"name": "Acme", "employees": "40", "industry": "retail", "website": "acme.example"},
        }
    )
    assert group["payload"] == {
        "group_id": "g-1",
        "name": "Acme",
        "industry": "retail",
        "employees": 40,
        "plan": None,
        "traits": {"website": '"acme.example"'},
    }
    (alias,) = mapped({"type": "alias", "userId": "u-new", "previousId": "anon-1"})
    assert alias["envelope"]["identifiers"]["user_id"] == "u-new"
    assert alias["payload"] == {"previous_id": "anon-1"}


def test_event_ids_uuid_kept_other_ids_hashed_per_source_missing_ids_from_content() -> None:
    given = str(uuid.uuid4())
    base = {"type": "track", "event": "x", "userId": "u"}
    assert message_event_id({**base, "messageId": given.upper()}, "web") == given
    hashed = message_event_id({**base, "messageId": "ajs-abc"}, "web")
    assert uuid.UUID(hashed).version == 5
    assert hashed == message_event_id({**base, "messageId": "ajs-abc"}, "web")
    assert hashed != message_event_id({**base, "messageId": "ajs-abc"}, "shop")
    content = message_event_id({**base, "sentAt": "2024-01-01T00:00:00Z"}, "web")
    assert content == message_event_id({**base, "sentAt": "2024-01-01T00:00:09Z"}, "web")
    assert content != message_event_id({**base, "event": "y"}, "web")


@pytest.mark.parametrize(
    ("times", "batch_sent_at", "expected"),
    [
        # The device clock is 2 hours behind: the event is 5 s older than the request.
        (
            {"timestamp": "2024-05-17T10:00:00Z", "sentAt": "2024-05-17T10:00:05Z"},
            None,
            RECEIVED - timedelta(seconds=5),
        ),
        # originalTimestamp is the device time when both are sent.
        (
            {
                "originalTimestamp": "2024-05-17T09:59:00Z",
                "timestamp": "2030-01-01T00:00:00Z",
                "sentAt": "2024-05-17T10:00:00Z",
            },
            None,
            RECEIVED - timedelta(minutes=1),
        ),
        # The batch's sentAt applies to messages without their own (Segment's Python SDK).
        (
            {"timestamp": "2024-05-17T13:59:30+02:00"},
            "2024-05-17T12:00:00Z",
            RECEIVED - timedelta(seconds=30),
        ),
        # No sentAt: the timestamp as sent (historical imports); no time at all: the receive time.
        ({"timestamp": "2023-12-24T18:00:00Z"}, None, datetime(2023, 12, 24, 18, tzinfo=UTC)),
        ({}, None, RECEIVED),
    ],
)
def test_clock_skew_correction(
    times: dict[str, str], batch_sent_at: str | None, expected: datetime, mapped: Any
) -> None:
    (event,) = mapped({"type": "track", "event": "x", "userId": "u", **times}, sent_at=batch_sent_at)
    assert event["envelope"]["occurred_at"] == expected
    assert event["envelope"]["received_at"] == RECEIVED


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ([1, 2], "a message must be a JSON object"),
        ({"type": "trak", "userId": "u"}, "type: 'trak' is not a Segment message type"),
        ({"type": "track", "event": "x", "userID": "u"}, "userID: unknown field for a track message"),
        ({"type": "track", "event": "x", "traits": {}, "userId": "u"}, "traits: unknown field"),
        ({"type": "track", "event": "x"}, "userId or anonymousId is required"),
        ({"type": "track", "userId": "u"}, "event: a track message needs the event name"),
        (
            {"type": "track", "event": "x", "userId": "u", "properties": [1]},
            "properties: expected a JSON object",
        ),
        (
            {"type": "track", "event": "x", "userId": "u", "timestamp": "yesterday"},
            "timestamp: 'yesterday' is not",
        ),
        (
            {"type": "track", "event": "x", "userId": "u", "messageId": {"a": 1}},
            "messageId: expected a string",
        ),
        (
            {"type": "track", "event": "x", "userId": "u", "timestamp": "0001-01-01", "sentAt": "9999-01-01"},
            "timestamp/sentAt: they are so far apart",
        ),
        (
            {"type": "track", "event": "x", "userId": "u", "context": {"externalIds": [{"id": 1}]}},
            "externalIds",
        ),
        (
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u",
                "properties": {"products": {"a": 1}},
            },
            "properties.products: expected a list",
        ),
    ],
)
def test_malformed_messages_are_refused_with_the_field_named(message: Any, reason: str) -> None:
    with pytest.raises(SegmentError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        segment_to_events(message, "web", received_at=RECEIVED)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            {"type": "identify", "userId": "u", "traits": {"email": "not-an-email"}},
            "envelope.identifiers.email",
        ),
        ({"type": "track", "event": "x", "userId": True}, "envelope.identifiers.user_id"),
        (
            {"type": "track", "event": "Order Completed", "userId": "u", "properties": {"order_id": "O"}},
            "payload.revenue: required field is missing",
        ),
        (
            {"type": "group", "userId": "u", "groupId": "g", "traits": {"employees": "many"}},
            "payload.employees",
        ),
        ({"type": "alias", "userId": "u"}, "payload.previous_id: required field is missing"),
    ],
)
def test_wrong_leaf_values_are_left_to_schema_validation_which_names_the_field(
    message: Any, problem: str
) -> None:
    events = segment_to_events(message, "web", received_at=RECEIVED)
    with pytest.raises(InvalidEvent, match=problem.replace(".", r"\.")):
        validate_event(events[0])


@pytest.mark.parametrize(
    ("message", "channel"),
    [
        ({"context": {"library": {"name": "analytics-ios"}}}, "app"),
        ({"context": {"library": {"name": "@segment/analytics-react-native"}}}, "app"),
        ({"context": {"library": {"name": "RudderLabs JavaScript SDK"}}}, "web"),
        ({"context": {"library": {"name": "analytics-python"}}}, "api"),
        ({"channel": "mobile", "context": {"library": {"name": "analytics-python"}}}, "app"),
        ({}, None),
    ],
)
def test_channel_comes_from_the_sdk(message: dict[str, Any], channel: str | None, mapped: Any) -> None:
    (event,) = mapped({"type": "track", "event": "x", "userId": "u", **message})
    assert event["envelope"]["context"]["channel"] == channel
