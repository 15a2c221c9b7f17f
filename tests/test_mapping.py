"""Mapping files: loading errors that name the file, key path and fix; rows turned into events.

Mappings are loaded from real YAML files and checked against the real Avro catalogue; the
events they produce go through the real ``validate_event`` where normalisation matters.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from patron.connectors.mapping import Mapping, MappingError, load_mapping
from patron.events.models import validate_event

ORDERS = """\
source: shop
format: csv
csv: {delimiter: ",", encoding: utf-8}
default_region: DE
timezone: Europe/Berlin
events:
  - event_type: order_completed
    event_id: [order_id]
    when: ordered_at
    fields:
      occurred_at: {column: ordered_at, type: timestamp, format: "%d.%m.%Y %H:%M"}
      identifiers.email: email
      identifiers.phone: phone
      identifiers.external_ids.shop_customer_id: customer_id
      payload.order_id: order_id
      payload.revenue: {column: total, type: float}
      payload.items: {column: items, type: json}
    constants:
      context.channel: web
      payload.currency: EUR
"""
ROW = {
    "order_id": "O-1",
    "ordered_at": "17.05.2024 09:30",
    "email": "  Jana.Novak@Example.COM ",
    "phone": "030 1234567",
    "customer_id": "9001",
    "total": "119.90",
    "items": '[{"product_id": "P-1", "price": 119.9}]',
}


def write(tmp_path: Path, text: str, name: str = "orders.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, name: str = "orders.yaml") -> Mapping:
    return load_mapping(write(tmp_path, text, name))


def error_of(tmp_path: Path, text: str, name: str = "orders.yaml") -> str:
    with pytest.raises(MappingError) as caught:
        load(tmp_path, text, name)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


def only_event(mapping: Mapping, row: dict[str, Any], raw: bytes = b"raw") -> dict[str, Any]:
    [candidate] = mapping.apply(row, raw)
    assert candidate.error is None, candidate.error
    assert candidate.event is not None
    return candidate.event


def validated(mapping: Mapping, event: dict[str, Any]) -> dict[str, Any]:
    event["envelope"]["received_at"] = datetime.now(UTC)
    return validate_event(event, default_region=mapping.default_region, timezone=mapping.timezone)


# -- the contract example --------------------------------------------------------------------------
def test_the_contract_example_maps_a_row_to_a_normalised_order(tmp_path):
    mapping = load(tmp_path, ORDERS)
    event = validated(mapping, only_event(mapping, ROW))
    envelope, payload = event["envelope"], event["payload"]
    assert envelope["event_type"] == "order_completed"
    assert envelope["source"] == "shop"
    assert envelope["occurred_at"] == datetime(2024, 5, 17, 7, 30, tzinfo=UTC)  # 09:30 in Berlin (CEST)
    assert envelope["identifiers"]["email"] == "jana.novak@example.com"
    assert envelope["identifiers"]["phone"] == "+49301234567"  # default_region DE
    assert envelope["identifiers"]["external_ids"] == {"shop_customer_id": "9001"}
    assert envelope["context"]["channel"] == "web"
    assert payload["order_id"] == "O-1"
    assert payload["revenue"] == pytest.approx(119.9)
    assert payload["currency"] == "EUR"
    assert payload["items"][0]["product_id"] == "P-1"
    assert mapping.columns.keys() == ROW.keys()


def test_event_ids_are_deterministic_and_come_from_the_event_id_columns(tmp_path):
    mapping = load(tmp_path, ORDERS)
    first = only_event(mapping, ROW)["envelope"]["event_id"]
    assert only_event(load(tmp_path, ORDERS), ROW)["envelope"]["event_id"] == first  # a new process, same id
    corrected = only_event(mapping, {**ROW, "total": "99.00"})["envelope"]["event_id"]
    assert corrected == first  # the same order re-exported with another total is the same event
    assert only_event(mapping, {**ROW, "order_id": "O-2"})["envelope"]["event_id"] != first


def test_without_event_id_columns_the_raw_row_decides_the_id(tmp_path):
    mapping = load(tmp_path, ORDERS.replace("    event_id: [order_id]\n", ""))
    one = only_event(mapping, ROW, b"O-1,a\r\n")["envelope"]["event_id"]
    assert only_event(mapping, ROW, b"O-1,a\n")["envelope"]["event_id"] == one  # line endings do not matter
    assert only_event(mapping, ROW, b"O-1,b\n")["envelope"]["event_id"] != one


def test_literal_parts_and_the_event_type_separate_ids(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: crm
        events:
          - event_type: lead_created
            event_id: [lead_id, "literal:v1"]
            fields: {occurred_at: at, payload.lead_id: lead_id, payload.lead_source: src, payload.stage: stage}
          - event_type: lead_created
            event_id: [lead_id, "literal:v2"]
            fields: {occurred_at: at, payload.lead_id: lead_id, payload.lead_source: src, payload.stage: stage}
        """,
    )
    row = {"lead_id": "L1", "at": "2024-05-01T10:00:00Z", "src": "web", "stage": "new"}
    ids = {candidate.event["envelope"]["event_id"] for candidate in mapping.apply(row, b"x")}
    assert len(ids) == 2


# -- loading errors --------------------------------------------------------------------------------
def test_a_misspelt_target_names_the_file_path_and_the_fix(tmp_path):
    message = error_of(tmp_path, ORDERS.replace("payload.revenue:", "payload.revenu:"))
    assert message == (
        f"{tmp_path / 'orders.yaml'}: events[0].fields.payload.revenu: not a field of order_completed's "
        "payload (did you mean payload.revenue?)"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "identifiers.email:",
            "identifiers.emial:",
            "events[0].fields.identifiers.emial: not a field of "
            "order_completed's identifiers (did you mean identifiers.email?)",
        ),
        (
            "payload.order_id:",
            "order_id:",
            "events[0].fields.order_id: not a field of order_completed's envelope "
            "(payload fields need the prefix: did you mean payload.order_id?)",
        ),
        (
            "  occurred_at:",
            "  envelope.occurred_at:",
            "events[0].fields.envelope.occurred_at: envelope fields are "
            "written without the `envelope.` prefix: use occurred_at",
        ),
        (
            "identifiers.external_ids.shop_customer_id:",
            "identifiers.external_id.shop_customer_id:",
            "did you mean identifiers.external_ids.shop_customer_id?",
        ),
        (
            "payload.items:",
            "payload.revenue.items:",
            "events[0].fields.payload.revenue.items: payload.revenue is "
            "of type double, it has no field 'items'",
        ),
        ("identifiers.phone:", "received_at:", "events[0].fields.received_at: set by the connector"),
        (
            "type: float",
            "type: flaot",
            "events[0].fields.payload.revenue.type: 'flaot' is not allowed; use one of "
            "string, int, float, bool, timestamp, date, json (did you mean float?)",
        ),
        ("    fields:", "    feilds:", "events[0]: unknown key 'feilds' (did you mean fields?)"),
        (
            "event_type: order_completed",
            "event_type: order_complete",
            "events[0].event_type: unknown event type 'order_complete' (did you mean 'order_completed'?)",
        ),
        (
            "timezone: Europe/Berlin",
            "timezone: Europe/Berln",
            "timezone: unknown time zone 'Europe/Berln' (did you mean Europe/Berlin?)",
        ),
        ("default_region: DE", "default_region: DX", "default_region: 'DX' is not a phone region code"),
        ("format: csv", "format: xml", "format: 'xml' is not allowed; use one of csv, jsonl, parquet"),
        ("encoding: utf-8", "encoding: utf-9", "csv.encoding: unknown encoding 'utf-9'"),
        ('delimiter: ","', 'delimiter: ";;"', "csv.delimiter: ';;' must be exactly one character"),
        (
            "      payload.currency: EUR\n",
            "",
            "events[0]: payload.currency is required by order_completed: map it "
            "under fields or set it under constants",
        ),
        (
            "      payload.currency: EUR",
            "      payload.order_id: X",
            "events[0].constants.payload.order_id: set both under fields and constants",
        ),
        (
            "{column: total, type: float}",
            "{column: total, format: '%d'}",
            "format: needs type: timestamp or type: date",
        ),
        ("[order_id]", "[]", "events[0].event_id: list at least one column or literal:VALUE"),
        ("source: shop", "source: ['shop']", "source: expected text, got list"),
        (
            "identifiers.email: email",
            "event_id: email",
            "give either event_id: (columns hashed into an id) or fields.event_id",
        ),
    ],
)
def test_mapping_mistakes_are_one_line_naming_the_key_path(tmp_path, old, new, expected):
    assert old in ORDERS
    message = error_of(tmp_path, ORDERS.replace(old, new, 1))
    assert message.startswith(f"{tmp_path / 'orders.yaml'}: ")
    assert expected in message


def test_yaml_syntax_errors_name_the_line(tmp_path):
    message = error_of(tmp_path, "source: shop\nevents:\n  - event_type: identify\n    fields: [\n")
    assert message.startswith(f"{tmp_path / 'orders.yaml'}:line ")
    assert "not valid YAML" in message


def test_a_missing_mapping_file_is_reported(tmp_path):
    with pytest.raises(MappingError, match="mapping file not found"):
        load_mapping(tmp_path / "nope.yaml")


def test_the_shorthand_form_is_one_event_and_reports_paths_without_an_events_index(tmp_path):
    shorthand = """\
        source: web
        event_type: page_viewed
        fields:
          occurred_at: ts
          identifiers.anonymous_id: anon
          payload.url: url
        """
    mapping = load(tmp_path, shorthand)
    event = only_event(mapping, {"ts": "2024-05-01T10:00:00Z", "anon": "a-1", "url": "https://x.example/"})
    assert event["payload"]["url"] == "https://x.example/"
    message = error_of(tmp_path, shorthand.replace("payload.url", "payload.ulr"))
    assert ": fields.payload.ulr: not a field of page_viewed's payload (did you mean payload.url?)" in message


def test_yaml_1_1_booleans_do_not_swallow_norway_or_yes_no_keys(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: crm
        default_region: NO
        event_type: consent_changed
        fields:
          occurred_at: at
          identifiers.user_id: user
          payload.purpose: purpose
          payload.channel: channel
          payload.granted: {column: granted, type: bool, map: {yes: true, no: false, "ja": true}}
        """,
    )
    assert mapping.default_region == "NO"
    base = {"at": "2024-05-01T10:00:00Z", "user": "u1", "purpose": "marketing", "channel": "email"}
    for raw, expected in (("yes", True), ("no", False), ("JA", True), ("1", True)):
        assert only_event(mapping, {**base, "granted": raw})["payload"]["granted"] is expected


# -- applying ----------------------------------------------------------------------------------------
def test_a_cast_failure_rejects_the_event_naming_column_value_and_type(tmp_path):
    mapping = load(tmp_path, ORDERS)
    [candidate] = mapping.apply({**ROW, "total": "12,50 €", "ordered_at": "2024-05-17"}, b"raw")
    assert candidate.event is None
    assert "column 'total' (payload.revenue): '12,50 €' is not a number" in candidate.error
    assert (
        "column 'ordered_at' (occurred_at): '2024-05-17' does not match the timestamp format '%d.%m.%Y %H:%M'"
        in (candidate.error)
    )


def test_an_empty_required_column_and_an_empty_id_column_are_rejections(tmp_path):
    mapping = load(tmp_path, ORDERS)
    [candidate] = mapping.apply({**ROW, "order_id": "  "}, b"raw")
    assert "column 'order_id' is empty but payload.order_id is required" in candidate.error
    assert "the event id is derived from it" in candidate.error


def test_when_emits_only_the_events_whose_column_is_filled(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: helpdesk
        events:
          - event_type: ticket_opened
            event_id: [ticket_id]
            fields: {occurred_at: opened_at, identifiers.email: email, payload.ticket_id: ticket_id}
            constants: {payload.priority: normal, payload.channel: email}
          - event_type: ticket_resolved
            event_id: [ticket_id]
            when: resolved_at
            fields:
              occurred_at: resolved_at
              identifiers.email: email
              payload.ticket_id: ticket_id
              payload.resolution_seconds: {column: seconds, type: int}
            constants: {payload.resolution: solved, payload.reopened_count: 0}
        """,
    )
    row = {"ticket_id": "T1", "opened_at": "2024-05-01T09:00:00Z", "email": "a@b.c", "seconds": "60"}
    assert [c.event_type for c in mapping.apply({**row, "resolved_at": ""}, b"r")] == ["ticket_opened"]
    both = mapping.apply({**row, "resolved_at": "2024-05-01T09:01:00Z"}, b"r")
    assert [c.event_type for c in both] == ["ticket_opened", "ticket_resolved"]
    assert both[1].event["payload"]["resolution_seconds"] == 60
    # One event's bad value does not take the row's other events down with it.
    mixed = mapping.apply({**row, "resolved_at": "2024-05-01T09:01:00Z", "seconds": "soon"}, b"r")
    assert mixed[0].event is not None and mixed[1].error is not None


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2024-05-17T09:30:00Z", None, datetime(2024, 5, 17, 9, 30, tzinfo=UTC)),
        ("2024-05-17 09:30:00+02:00", None, datetime(2024, 5, 17, 7, 30, tzinfo=UTC)),
        ("2024-01-17 09:30", None, datetime(2024, 1, 17, 14, 30, tzinfo=UTC)),  # naive: New York, EST
        ("2024-07-17 09:30", None, datetime(2024, 7, 17, 13, 30, tzinfo=UTC)),  # naive: New York, EDT
        ("1715938200", None, datetime(2024, 5, 17, 9, 30, tzinfo=UTC)),  # epoch seconds
        ("1715938200000", None, datetime(2024, 5, 17, 9, 30, tzinfo=UTC)),  # epoch milliseconds
        (1715938200, None, datetime(2024, 5, 17, 9, 30, tzinfo=UTC)),  # a JSON number
        ("05/17/2024 09:30 AM", "%m/%d/%Y %I:%M %p", datetime(2024, 5, 17, 13, 30, tzinfo=UTC)),
        ("17.05.2024 09:30 +0000", "%d.%m.%Y %H:%M %z", datetime(2024, 5, 17, 9, 30, tzinfo=UTC)),
    ],
)
def test_timestamps_in_every_accepted_form_become_utc(tmp_path, value, fmt, expected):
    spec = "{column: at, type: timestamp" + (f", format: '{fmt}'" if fmt else "") + "}"
    mapping = load(
        tmp_path,
        f"""\
        source: web
        timezone: America/New_York
        event_type: logged_in
        fields: {{occurred_at: {spec}, identifiers.user_id: user, payload.method: method}}
        """,
    )
    event = only_event(mapping, {"at": value, "user": "u1", "method": "password"})
    assert event["envelope"]["occurred_at"] == expected


def test_casts_defaults_maps_and_nested_targets(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: app
        timestamp_format: "%Y%m%d%H%M"
        event_type: identify
        fields:
          occurred_at: {column: seen, type: timestamp}
          identifiers.user_id: {column: id, type: string}
          identifiers.external_ids.crm_id: crm
          context.campaign.name: campaign
          context.locale: {column: lang, default: en-US, map: {de: de-DE, fr: fr-FR}}
          payload.birthday: {column: born, type: date, format: "%d/%m/%Y"}
          payload.traits.vip: {column: vip, type: bool}
          payload.traits.score: score
          payload.traits.plan: plan
        """,
    )
    event = only_event(
        mapping,
        {
            "seen": "202405170930",
            "id": 42,
            "crm": "C-7",
            "campaign": "spring",
            "lang": "de",
            "born": "14/03/1988",
            "vip": "yes",
            "score": 9.5,
            "plan": "pro",
        },
    )
    envelope, payload = event["envelope"], event["payload"]
    assert envelope["occurred_at"] == datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
    assert envelope["identifiers"] == {"user_id": "42", "external_ids": {"crm_id": "C-7"}}
    assert envelope["context"] == {"campaign": {"name": "spring"}, "locale": "de-DE"}
    # traits hold JSON-encoded values (docs/events.md): types survive, text stays text
    assert payload == {
        "birthday": date(1988, 3, 14),
        "traits": {"vip": "true", "score": "9.5", "plan": '"pro"'},
    }
    defaulted = only_event(mapping, {"seen": "202405170930", "id": "7", "lang": "", "born": "01/01/2000"})
    assert defaulted["envelope"]["context"]["locale"] == "en-US"
    assert "crm_id" not in defaulted["envelope"]["identifiers"].get("external_ids", {})


@pytest.mark.parametrize(
    ("type_name", "value", "expected", "problem"),
    [
        ("int", "3", 3, None),
        ("int", "3.0", 3, None),
        ("int", "3.5", None, "'3.5' is not a whole number"),
        ("float", "1e3", 1000.0, None),
        ("float", "nan", None, "'nan' is not a number (not finite)"),
        ("bool", "Y", True, None),
        ("bool", "off", False, None),
        ("bool", "maybe", None, "'maybe' is not a boolean"),
        ("json", '{"a": [1]}', {"a": [1]}, None),
        ("json", "{broken", None, "'{broken' is not valid JSON"),
        ("date", "2024-02-30", None, "'2024-02-30' does not match an ISO 8601 date"),
        ("timestamp", "yesterday", None, "'yesterday' is not a timestamp"),
    ],
)
def test_casts_accept_what_fits_and_explain_what_does_not(tmp_path, type_name, value, expected, problem):
    mapping = load(
        tmp_path,
        f"""\
        source: x
        event_type: custom_event
        fields:
          occurred_at: at
          identifiers.user_id: user
          payload.name: name
          payload.properties.value: {{column: value, type: {type_name}}}
        """,
    )
    [candidate] = mapping.apply(
        {"at": "2024-05-01T00:00:00Z", "user": "u", "name": "n", "value": value}, b"r"
    )
    if problem is None:
        assert orjson.loads(candidate.event["payload"]["properties"]["value"]) == expected
    else:
        assert candidate.event is None
        assert f"column 'value' (payload.properties.value): {problem}" in candidate.error


def test_dotted_columns_reach_into_nested_json(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: web
        event_type: page_viewed
        fields:
          occurred_at: timestamp
          identifiers.anonymous_id: anonymousId
          payload.url: context.page.url
          payload.title: properties.title
        """,
    )
    row = {
        "timestamp": "2024-05-01T10:00:00Z",
        "anonymousId": "a-1",
        "context": {"page": {"url": "https://shop.example/x"}},
        "properties": "not an object",
    }
    event = only_event(mapping, row)
    assert event["payload"] == {"url": "https://shop.example/x"}


def test_constants_are_copied_per_event(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: x
        event_type: custom_event
        fields: {occurred_at: at, identifiers.user_id: user, payload.name: name}
        constants: {identifiers.external_ids: {origin: import}}
        """,
    )
    row = {"at": "2024-05-01T00:00:00Z", "user": "u", "name": "n"}
    first = only_event(mapping, row)
    first["envelope"]["identifiers"]["external_ids"]["origin"] = "changed"
    assert only_event(mapping, row)["envelope"]["identifiers"]["external_ids"] == {"origin": "import"}


def test_a_whole_properties_object_is_stored_as_json_encoded_values(tmp_path):
    mapping = load(
        tmp_path,
        """\
        source: x
        event_type: custom_event
        fields:
          occurred_at: at
          identifiers.user_id: user
          payload.name: name
          payload.properties: {column: props, type: json}
        constants: {context.channel: batch}
        """,
    )
    row = {"at": "2024-05-01T00:00:00Z", "user": "u", "name": "n", "props": '{"seats": 40, "region": "EMEA"}'}
    event = validated(mapping, only_event(mapping, row))
    assert event["payload"]["properties"] == {"seats": "40", "region": '"EMEA"'}
