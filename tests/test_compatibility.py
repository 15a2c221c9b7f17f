"""Avro compatibility rules on real catalogue schemas, and the embedded registry enforcing them.

Every accepted BACKWARD change is also proven with data: a record written with the old
schema is read with the new one by fastavro, so "accepted" means old data really reads.
"""

from __future__ import annotations

import copy
import io
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from patron.schemas.catalogue import default_catalogue
from patron.schemas.compatibility import COMPATIBILITY_LEVELS, InvalidSchema, check_compatibility
from patron.schemas.registry import FileRegistry, IncompatibleSchema

Schema = dict[str, Any]
Change = Callable[[list[dict[str, Any]]], None]
T0 = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)


def base(event_type: str) -> Schema:
    return copy.deepcopy(default_catalogue().get(event_type).schema)


def payload_fields(schema: Schema) -> list[dict[str, Any]]:
    return next(f for f in schema["fields"] if f["name"] == "payload")["type"]["fields"]


def field(fields: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(f for f in fields if f["name"] == name)


def evolve(event_type: str, *changes: Change) -> Schema:
    """The catalogue schema of ``event_type`` with ``changes`` applied to its payload fields."""
    schema = base(event_type)
    for change in changes:
        change(payload_fields(schema))
    return schema


def add(new_field: dict[str, Any]) -> Change:
    return lambda fields: fields.append({"doc": "added", **new_field})


def drop(name: str) -> Change:
    return lambda fields: fields.remove(field(fields, name))


def alter(field_name: str, /, **attrs: Any) -> Change:
    return lambda fields: field(fields, field_name).update(attrs)


def without(name: str, attr: str) -> Change:
    return lambda fields: field(fields, name).pop(attr)


def alter_items(**attrs: Any) -> Change:
    """Change the ``price`` field of the order's line items (``payload.items[]``)."""
    return lambda fields: field(field(fields, "items")["type"]["items"]["fields"], "price").update(attrs)


def with_payload_name(schema: Schema, name: str, aliases: list[str] | None = None) -> Schema:
    record = next(f for f in schema["fields"] if f["name"] == "payload")["type"]
    record["name"] = name
    if aliases is not None:
        record["aliases"] = aliases
    return schema


def with_external_ids_values(event_type: str, values: str) -> Schema:
    schema = base(event_type)
    identifiers = field(field(schema["fields"], "envelope")["type"]["fields"], "identifiers")["type"]
    field(identifiers["fields"], "external_ids")["type"]["values"] = values
    return schema


def envelope(event_type: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": T0,
        "received_at": T0,
        "source": "shop",
        "identifiers": {"user_id": "u-1", "email": "a@example.com", "external_ids": {"crm_id": "C-42"}},
        "context": {"channel": "web"},
    }


SAMPLES = {
    "order_completed": {
        "envelope": envelope("order_completed"),
        "payload": {
            "order_id": "O-1",
            "revenue": 119.9,
            "currency": "EUR",
            "tax": 19.14,
            "coupon": "SPRING10",
            "items": [{"product_id": "P-1", "quantity": 2, "price": 59.95}],
        },
    },
    "survey_answered": {
        "envelope": envelope("survey_answered"),
        "payload": {"survey_id": "S-1", "kind": "CSAT", "score": 4, "comment": "quick help"},
    },
}


def read_old_data_with(new: Schema, event_type: str) -> dict[str, Any]:
    """A sample written with the catalogue (old) schema, read back with ``new`` by fastavro's resolution."""
    old = fastavro.parse_schema(base(event_type))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, old, SAMPLES[event_type])
    out.seek(0)
    return fastavro.schemaless_reader(out, old, fastavro.parse_schema(new))


OPTIONAL_NOTE = {"name": "gift_note", "type": ["null", "string"], "default": None}
REQUIRED_NOTE = {"name": "gift_note", "type": "string"}

# (id, event type, new schema, level, None when accepted or a fragment every refusal must contain)
CASES: list[tuple[str, str, Schema, str, str | None]] = [
    (
        "optional field added",
        "order_completed",
        evolve("order_completed", add(OPTIONAL_NOTE)),
        "FULL_TRANSITIVE",
        None,
    ),
    (
        "field without default added, BACKWARD",
        "order_completed",
        evolve("order_completed", add(REQUIRED_NOTE)),
        "BACKWARD",
        "payload.gift_note: new field has no default, so data written with version 1 cannot be read",
    ),
    (
        "field without default added, FORWARD",
        "order_completed",
        evolve("order_completed", add(REQUIRED_NOTE)),
        "FORWARD",
        None,
    ),
    (
        "field without default removed, FORWARD",
        "order_completed",
        evolve("order_completed", drop("revenue")),
        "FORWARD",
        "payload.revenue: field was removed (or renamed) but has no default in version 1",
    ),
    (
        "field without default removed, BACKWARD",
        "order_completed",
        evolve("order_completed", drop("revenue")),
        "BACKWARD",
        None,
    ),
    (
        "field with default removed, FULL",
        "order_completed",
        evolve("order_completed", drop("coupon")),
        "FULL",
        None,
    ),
    (
        "rename without alias",
        "order_completed",
        evolve("order_completed", alter("currency", name="currency_code")),
        "BACKWARD",
        "payload.currency_code: new field has no default, so data written with version 1 cannot be read, which "
        'BACKWARD compatibility forbids; give it a default (if it renames currency, list the old name in its "aliases"',
    ),
    (
        "rename with alias, BACKWARD",
        "order_completed",
        evolve("order_completed", alter("currency", name="currency_code", aliases=["currency"])),
        "BACKWARD",
        None,
    ),
    (
        "rename with alias, FULL",
        "order_completed",
        evolve("order_completed", alter("currency", name="currency_code", aliases=["currency"])),
        "FULL",
        "payload.currency: field was removed (or renamed)",
    ),
    (
        "int to long, BACKWARD",
        "survey_answered",
        evolve("survey_answered", alter("score", type="long")),
        "BACKWARD",
        None,
    ),
    (
        "int to long, FORWARD",
        "survey_answered",
        evolve("survey_answered", alter("score", type="long")),
        "FORWARD",
        "payload.score: type changed from int to long, which FORWARD compatibility forbids "
        "(consumers still reading with version 1 could not read new data)",
    ),
    (
        "int to double",
        "survey_answered",
        evolve("survey_answered", alter("score", type="double")),
        "BACKWARD",
        None,
    ),
    (
        "double to string",
        "order_completed",
        evolve("order_completed", alter("revenue", type="string")),
        "BACKWARD",
        "payload.revenue: type changed from double to string, which BACKWARD compatibility forbids "
        "(data written with version 1 could not be read); add a new field instead",
    ),
    (
        "double to float inside array items",
        "order_completed",
        evolve("order_completed", alter_items(type="float")),
        "BACKWARD",
        "payload.items[].price: type changed from double to float",
    ),
    (
        "string to bytes",
        "order_completed",
        evolve("order_completed", alter("order_id", type="bytes")),
        "FULL",
        None,
    ),
    (
        "enum symbol added, BACKWARD",
        "survey_answered",
        evolve("survey_answered", lambda f: field(f, "kind")["type"]["symbols"].append("CES")),
        "BACKWARD",
        None,
    ),
    (
        "enum symbol added, FORWARD",
        "survey_answered",
        evolve("survey_answered", lambda f: field(f, "kind")["type"]["symbols"].append("CES")),
        "FORWARD",
        "payload.kind: enum symbols added (CES) that version 1 does not know",
    ),
    (
        "enum symbol removed",
        "survey_answered",
        evolve("survey_answered", lambda f: field(f, "kind")["type"]["symbols"].remove("CSAT")),
        "BACKWARD",
        "payload.kind: enum symbols removed (CSAT)",
    ),
    (
        "enum symbol removed, reader has a default",
        "survey_answered",
        evolve(
            "survey_answered",
            lambda f: field(f, "kind")["type"].update(symbols=["NPS", "OTHER"], default="OTHER"),
        ),
        "BACKWARD",
        None,
    ),
    (
        "union widened, BACKWARD",
        "order_completed",
        evolve("order_completed", alter("tax", type=["null", "double", "string"])),
        "BACKWARD",
        None,
    ),
    (
        "union widened, FORWARD",
        "order_completed",
        evolve("order_completed", alter("tax", type=["null", "double", "string"])),
        "FORWARD",
        "payload.tax: union branches added (string)",
    ),
    (
        "union narrowed",
        "order_completed",
        evolve("order_completed", alter("coupon", type=["null"])),
        "BACKWARD",
        "payload.coupon: union branches removed (string)",
    ),
    (
        "optional made required",
        "order_completed",
        evolve("order_completed", alter("coupon", type="string"), without("coupon", "default")),
        "BACKWARD",
        "payload.coupon: type changed from union [null, string] to string",
    ),
    (
        "required made optional, BACKWARD",
        "order_completed",
        evolve("order_completed", alter("order_id", type=["null", "string"])),
        "BACKWARD",
        None,
    ),
    (
        "required made optional, FORWARD",
        "order_completed",
        evolve("order_completed", alter("order_id", type=["null", "string"])),
        "FORWARD",
        "payload.order_id: type changed from string to union [null, string]",
    ),
    (
        "int promoted inside a reader union",
        "survey_answered",
        evolve("survey_answered", alter("score", type=["null", "double"], default=None)),
        "BACKWARD",
        None,
    ),
    (
        "map values changed",
        "order_completed",
        with_external_ids_values("order_completed", "int"),
        "BACKWARD",
        "envelope.identifiers.external_ids{}: type changed from string to int",
    ),
    (
        "record renamed without alias",
        "order_completed",
        with_payload_name(base("order_completed"), "OrderPayload"),
        "BACKWARD",
        "payload: type name changed from patron.events.OrderCompletedPayload to patron.events.OrderPayload",
    ),
    (
        "record renamed with alias",
        "order_completed",
        with_payload_name(base("order_completed"), "OrderPayload", aliases=["OrderCompletedPayload"]),
        "BACKWARD",
        None,
    ),
    (
        "breaking change under NONE",
        "order_completed",
        evolve("order_completed", alter("revenue", type="string")),
        "NONE",
        None,
    ),
]


@pytest.mark.parametrize(
    ("event_type", "new", "level", "refusal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_change_is_accepted_or_refused_with_the_field_named(
    event_type: str, new: Schema, level: str, refusal: str | None
):
    problems = check_compatibility(new, [base(event_type)], level)
    if refusal is None:
        assert problems == []
    else:
        assert problems, "the change should have been refused"
        assert any(refusal in p for p in problems), problems
        assert all("\n" not in p for p in problems)


@pytest.mark.parametrize(
    ("event_type", "new"),
    [c[1:3] for c in CASES if c[4] is None and c[3] in ("BACKWARD", "FULL", "FULL_TRANSITIVE")],
    ids=[c[0] for c in CASES if c[4] is None and c[3] in ("BACKWARD", "FULL", "FULL_TRANSITIVE")],
)
def test_accepted_backward_change_really_reads_old_data(event_type: str, new: Schema):
    record = read_old_data_with(new, event_type)
    assert record["envelope"]["source"] == "shop"


def test_refused_change_really_fails_on_old_data():
    """The checker's refusal matches what a reader does: the new required field cannot be filled."""
    new = evolve("order_completed", add(REQUIRED_NOTE))
    assert check_compatibility(new, [base("order_completed")], "BACKWARD")
    with pytest.raises(fastavro.read.SchemaResolutionError):
        read_old_data_with(new, "order_completed")


def test_float_widens_to_double_in_array_items():
    as_float = evolve("order_completed", alter_items(type="float"))
    assert check_compatibility(base("order_completed"), [as_float], "BACKWARD") == []
    (problem,) = check_compatibility(base("order_completed"), [as_float], "FORWARD")
    assert problem.startswith("payload.items[].price: type changed from float to double")
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(as_float), SAMPLES["order_completed"])
    out.seek(0)
    read = fastavro.schemaless_reader(
        out, fastavro.parse_schema(as_float), fastavro.parse_schema(base("order_completed"))
    )
    assert read["payload"]["items"][0]["price"] == pytest.approx(59.95, rel=1e-6)


def test_logical_types_follow_their_underlying_type():
    old = evolve(
        "order_completed",
        add(
            {"name": "shipped_at", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0}
        ),
    )
    new = evolve(
        "order_completed",
        add(
            {"name": "shipped_at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 0}
        ),
    )
    assert check_compatibility(new, [old], "FULL") == []
    as_string = evolve("order_completed", add({"name": "shipped_at", "type": "string", "default": ""}))
    (problem,) = check_compatibility(as_string, [old], "BACKWARD")
    assert problem.startswith("payload.shipped_at: type changed from long (timestamp-micros) to string")


def test_fixed_size_must_match():
    def with_digest(size: int) -> Schema:
        fixed = {"type": "fixed", "name": "Digest", "size": size}
        return evolve("order_completed", add({"name": "digest", "type": ["null", fixed], "default": None}))

    assert check_compatibility(with_digest(16), [with_digest(16)], "FULL") == []
    (problem,) = check_compatibility(with_digest(32), [with_digest(16)], "BACKWARD")
    assert problem.startswith(
        "payload.digest: fixed size changed from 16 to 32, which BACKWARD compatibility forbids"
    )


def test_fixed_size_change_is_named_as_such():
    def record(size: int) -> Schema:
        return {
            "type": "record",
            "name": "T",
            "fields": [{"name": "d", "type": {"type": "fixed", "name": "D", "size": size}}],
        }

    (problem,) = check_compatibility(record(8), [record(16)], "BACKWARD")
    assert problem.startswith("d: fixed size changed from 16 to 8")


def test_recursive_types_terminate_and_are_checked():
    def linked(extra: list[dict[str, Any]]) -> Schema:
        return {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "value", "type": "int"},
                {"name": "next", "type": ["null", "Node"], "default": None},
                *extra,
            ],
        }

    assert (
        check_compatibility(linked([{"name": "w", "type": "int", "default": 0}]), [linked([])], "FULL") == []
    )
    (problem,) = check_compatibility(linked([{"name": "w", "type": "int"}]), [linked([])], "BACKWARD")
    assert problem.startswith("w: new field has no default")


def test_deep_clash_inside_a_union_branch_is_reported_at_its_path():
    def with_line(price_type: str) -> Schema:
        line = {"type": "record", "name": "Gift", "fields": [{"name": "price", "type": price_type}]}
        return evolve("order_completed", add({"name": "gift", "type": ["null", line], "default": None}))

    (problem,) = check_compatibility(with_line("string"), [with_line("double")], "BACKWARD")
    assert problem.startswith("payload.gift.price: type changed from double to string")


def test_transitive_checks_every_version_and_plain_checks_only_the_latest():
    v1 = base("order_completed")
    v2 = evolve("order_completed", add({**REQUIRED_NOTE, "default": ""}))
    v3 = evolve("order_completed", add(REQUIRED_NOTE))  # reads v2 data (it has the note), not v1 data
    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    (problem,) = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert problem.startswith(
        "payload.gift_note: new field has no default, so data written with version 1 cannot"
    )


def test_same_problem_against_several_versions_is_one_line():
    v1 = base("order_completed")
    problems = check_compatibility(evolve("order_completed", drop("revenue")), [v1, v1], "FORWARD_TRANSITIVE")
    assert len(problems) == 1
    assert "no default in versions 1 and 2" in problems[0]


def test_full_reports_each_direction_that_breaks():
    problems = check_compatibility(
        evolve("order_completed", alter("revenue", type="string")), [base("order_completed")], "FULL"
    )
    assert len(problems) == 2
    assert "data written with version 1 could not be read" in problems[0]
    assert "consumers still reading with version 1 could not read new data" in problems[1]


def test_version_numbers_in_messages_are_the_registered_ones():
    new = evolve("order_completed", add(REQUIRED_NOTE))
    (problem,) = check_compatibility(new, [base("order_completed")], "BACKWARD", versions=[7])
    assert "data written with version 7 cannot be read" in problem


def test_nothing_to_compare_with_is_compatible_at_every_level():
    for level in COMPATIBILITY_LEVELS:
        assert check_compatibility(base("order_completed"), [], level) == []


def test_invalid_schema_is_refused_whatever_the_level():
    broken = evolve("order_completed", add({"name": "n", "type": "int", "default": "ten"}))
    with pytest.raises(InvalidSchema, match="the new schema is not a valid Avro schema: Default value <ten>"):
        check_compatibility(broken, [], "NONE")
    with pytest.raises(InvalidSchema, match=re.escape("unknown type 'patron.common.Nope'")):
        check_compatibility(
            evolve("order_completed", add({"name": "n", "type": "patron.common.Nope"})), [], "BACKWARD"
        )
    with pytest.raises(InvalidSchema, match="lacks its 'size' attribute"):
        check_compatibility({"type": "fixed", "name": "F"}, [], "NONE")


def test_unknown_level_is_refused_with_the_levels_listed():
    with pytest.raises(ValueError, match="unknown compatibility level 'sideways'; use one of NONE, BACKWARD"):
        check_compatibility(base("order_completed"), [], "sideways")


def test_level_is_case_insensitive():
    new = evolve("order_completed", add(REQUIRED_NOTE))
    assert check_compatibility(new, [base("order_completed")], "backward")


# --- the embedded registry enforcing the rules ---------------------------------------------------------------


@pytest.fixture
def registry(tmp_path) -> FileRegistry:
    return FileRegistry(tmp_path / "registry.db")


def test_file_registry_refuses_incompatible_version_and_keeps_what_it_had(registry: FileRegistry):
    subject = default_catalogue().get("order_completed").subject
    first = registry.register(subject, base("order_completed"))
    second = registry.register(subject, evolve("order_completed", add(OPTIONAL_NOTE)))
    before = [registry.get(subject, v) for v in registry.versions(subject)]
    breaking = evolve("order_completed", add(OPTIONAL_NOTE), alter("revenue", type="string"))
    with pytest.raises(IncompatibleSchema) as refused:
        registry.register(subject, breaking)
    message = str(refused.value)
    assert "payload.revenue: type changed from double to string" in message
    assert "is not BACKWARD compatible" in message
    assert "\n" not in message
    assert registry.versions(subject) == [1, 2]
    assert [registry.get(subject, v) for v in registry.versions(subject)] == before
    assert (registry.get(subject).schema_id, first) == (second, before[0].schema_id)
    assert registry.check(subject, breaking) == [
        "payload.revenue: type changed from double to string, which BACKWARD compatibility forbids "
        "(data written with version 2 could not be read); add a new field instead"
    ]


def test_file_registry_refuses_invalid_schema_even_for_a_new_subject(registry: FileRegistry):
    with pytest.raises(InvalidSchema):
        registry.register("x", {"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})
    assert registry.subjects() == []


def test_file_registry_applies_subject_level_over_global(registry: FileRegistry):
    subject = default_catalogue().get("order_completed").subject
    registry.register(subject, base("order_completed"))
    widened = evolve("order_completed", alter("tax", type=["null", "double", "string"]))
    registry.set_compatibility("FORWARD")
    assert registry.check(subject, widened)
    registry.set_compatibility("BACKWARD", subject)
    assert registry.check(subject, widened) == []
    assert registry.register(subject, widened) > 0
    assert registry.versions(subject) == [1, 2]
