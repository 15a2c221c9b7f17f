"""The ingest hot path's shortcuts give exactly what the straightforward code gave.

Each shortcut (ids formatted from the digest, canonical ids kept as they are, mapping fields
written straight into their container) is checked against the definition it replaces --
``uuid.UUID`` and the path walk -- on real mappings, a real SQLite log and real validation.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from patron.connectors.mapping import MAPPING_NAMESPACE, deterministic_id, load_mapping
from patron.events.ids import sha1_uuid_text
from patron.events.models import validate_event
from patron.streams.local_log import LocalLog, _event_id_bytes
from patron.streams.log import Message

# Characters uuid.UUID treats specially (whitespace, sign, underscore and 0x are accepted by int()).
NASTY = "0123456789abcdefABCDEF \t\n_+-xg{}"


def _reference_uuid_bytes(event_id: str) -> bytes | str:
    try:
        return uuid.UUID(event_id).bytes
    except ValueError:
        return event_id


@given(st.binary(max_size=300))
def test_ids_from_the_digest_equal_uuid5_objects(name: bytes) -> None:
    digest = hashlib.sha1(MAPPING_NAMESPACE.bytes + name).digest()
    assert deterministic_id(name) == str(uuid.UUID(bytes=digest[:16], version=5))


@given(st.uuids(), st.text(max_size=60))
def test_sha1_uuid_text_is_uuid5_for_text_names(namespace: uuid.UUID, name: str) -> None:
    assert sha1_uuid_text(namespace.bytes + name.encode()) == str(uuid.uuid5(namespace, name))


@st.composite
def dashed_ids(draw: st.DrawFn) -> str:
    """36 characters with dashes where a canonical uuid has them, the rest hex or something uuid.UUID may accept."""
    body = draw(st.text(alphabet=st.sampled_from(NASTY), min_size=32, max_size=32))
    if draw(st.booleans()):
        body = draw(st.uuids()).hex.upper() if draw(st.booleans()) else draw(st.uuids()).hex
    return "-".join([body[:8], body[8:12], body[12:16], body[16:20], body[20:]])


@given(st.one_of(dashed_ids(), st.uuids().map(str), st.text(max_size=40)))
def test_stored_event_ids_are_what_uuid_decoding_gives(event_id: str) -> None:
    assert _event_id_bytes(event_id) == _reference_uuid_bytes(event_id)


def test_the_log_dedups_an_id_however_its_uuid_is_written(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    canonical = "0d6f7c2e-8a43-5b1e-9c55-3f2b8e41a7d0"
    first = log.append("t", [Message(b"k", canonical, b"v", 0)])
    again = log.append(
        "t", [Message(b"k", canonical.upper(), b"v", 0), Message(b"k", f"{{{canonical}}}", b"v", 0)]
    )
    # Not uuids: kept as text, so they neither collide with the uuid above nor with each other.
    texts = ["0d6f7c2e 8a43-5b1e-9c55-3f2b8e41a7d0", "0d6f7c2e-8a43-5b1e-9c55-3f2b8e41a7dg"]
    other = log.append("t", [Message(b"k", text, b"v", 0) for text in texts])
    assert (first.appended, again.duplicates, other.appended) == (1, 2, 2)
    stored = [record.event_id for partition in log.end_offsets("t") for record in log.read("t", partition, 0)]
    assert sorted(stored) == sorted([canonical, *texts])


def _event(event_id: str, received_at: datetime) -> dict[str, Any]:
    return {
        "envelope": {
            "event_id": event_id,
            "event_type": "page_viewed",
            "occurred_at": "2024-05-01T10:00:00Z",
            "received_at": received_at,
            "source": "web",
            "identifiers": {"anonymous_id": "a-1"},
            "context": {},
        },
        "payload": {"url": "https://shop.example/"},
    }


def test_validation_keeps_canonical_ids_and_canonicalises_the_others() -> None:
    canonical = "0d6f7c2e-8a43-5b1e-9c55-3f2b8e41a7d0"
    now = datetime.now(UTC)
    for written in (canonical, canonical.upper(), f"urn:uuid:{canonical}", canonical.replace("-", "")):
        envelope = validate_event(_event(written, now))["envelope"]
        assert envelope["event_id"] == canonical
        assert envelope["received_at"] == now
        assert envelope["occurred_at"] == datetime(2024, 5, 1, 10, tzinfo=UTC)
        assert envelope["occurred_at"].tzinfo is UTC


def _mapping(tmp_path: Path, fields: list[str]) -> Any:
    """A page_viewed mapping with the three fields it needs plus ``fields`` (``"target: spec"`` lines)."""
    lines = ["occurred_at: at", "identifiers.anonymous_id: anon", "payload.url: url", *fields]
    head = "source: web\nevent_type: page_viewed\nevent_id: [id]\nfields:\n"
    path = tmp_path / "web.yaml"
    path.write_text(head + "".join(f"  {line}\n" for line in lines), encoding="utf-8")
    return load_mapping(path)


ROW = {"id": "1", "at": "2024-05-01T10:00:00Z", "anon": "a-1", "url": "https://shop.example/"}


def _context(tmp_path: Path, fields: list[str], row: dict[str, Any]) -> dict[str, Any]:
    [candidate] = _mapping(tmp_path, fields).apply({**ROW, **row}, b"raw")
    assert candidate.error is None, candidate.error
    return candidate.event["envelope"]["context"]


def test_a_container_target_and_a_target_inside_it_apply_in_the_order_written(tmp_path: Path) -> None:
    row = {"camp": '{"name": "spring"}', "src": "google"}
    whole = "context.campaign: {column: camp, type: json}"
    inner = "context.campaign.source: src"
    whole_first, inner_first = [whole, inner], [inner, whole]
    assert _context(tmp_path, whole_first, row) == {"campaign": {"name": "spring", "source": "google"}}
    assert _context(tmp_path, inner_first, row) == {"campaign": {"name": "spring"}}
    # a value that is no object is replaced by one when a field is written inside it
    assert _context(tmp_path, whole_first, {**row, "camp": "[1]"}) == {"campaign": {"source": "google"}}


def test_copied_columns_skip_only_missing_and_blank_values(tmp_path: Path) -> None:
    fields = ["context.ip: ip", "context.locale: locale", "context.user_agent: agent", "payload.title: title"]
    mapping = _mapping(tmp_path, fields)
    row = {**ROW, "ip": None, "locale": " \t", "title": 0}  # agent absent
    [candidate] = mapping.apply(row, b"raw")
    assert candidate.event is not None
    assert candidate.event["envelope"]["context"] == {}
    assert candidate.event["payload"] == {"url": "https://shop.example/", "title": 0}
    assert candidate.event["envelope"]["identifiers"] == {"anonymous_id": "a-1"}
    nested = _mapping(tmp_path, ["context.campaign.source: src"])
    [without] = nested.apply(ROW, b"raw")
    assert without.event is not None and "campaign" not in without.event["envelope"]["context"]
