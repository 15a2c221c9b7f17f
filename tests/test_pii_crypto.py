"""PII encrypted per subject in the log: nothing in clear on disk, readable with the key, erased without it."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from patron.config import Settings
from patron.errors import PatronError
from patron.events.codec import EventCodec, open_codec
from patron.events.keystore import KEYS_FILE, MASTER_KEY_ENV, LocalKeyStore
from patron.events.models import validate_event
from patron.events.pii_crypto import PREFIX, profile_subject, subject_of
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, scan

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def identify(n: int, email: str, name: str) -> dict[str, Any]:
    return validate_event(
        {
            "envelope": {
                "event_id": f"00000000-0000-4000-8000-{n:012d}",
                "event_type": "identify",
                "occurred_at": AT,
                "received_at": AT,
                "source": "crm",
                "identifiers": {"email": email, "external_ids": {"crm_id": f"CRM-{n:05d}"}},
                "context": {"ip": "203.0.113.7"},
            },
            "payload": {"first_name": name, "traits": {"plan": '"pro"'}},
        }
    )


def in_clear(codec: EventCodec, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as a codec without encryption reads it back (defaults filled in)."""
    plain = EventCodec(codec.registry, codec.catalogue)
    return plain.decode(plain.encode(event))


def test_the_log_holds_no_clear_pii_and_the_codec_reads_it_back(data_dir: Path) -> None:
    codec = open_codec(Settings.load(data_dir=data_dir))
    events = [
        identify(1, "ada.lovelace@example.com", "Augusta"),
        identify(2, "alan.turing@example.com", "Alan"),
    ]
    log = LocalLog(data_dir)
    log.append(EVENTS_TOPIC, [codec.message(event) for event in events])
    log.close()
    disk = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file()).lower()
    for clear in (b"ada.lovelace@example.com", b"augusta", b"crm-00001", b"203.0.113.7", b"alan.turing"):
        assert clear not in disk
    assert b"identify" in disk or b"crm" in disk  # the records are there, non-personal fields readable

    log = LocalLog(data_dir)
    decoded = [codec.decode(record.value) for record in scan(log, EVENTS_TOPIC)]
    raw = [record.value for record in scan(log, EVENTS_TOPIC)]
    log.close()
    assert sorted(decoded, key=lambda e: e["envelope"]["event_id"]) == [in_clear(codec, e) for e in events]
    # the wire format is unchanged: plain fastavro reads the record, PII fields as token strings
    schema = codec.registry.schema(int.from_bytes(raw[0][1:5], "big"))
    plain = fastavro.schemaless_reader(io.BytesIO(raw[0][5:]), fastavro.parse_schema(schema))
    assert plain["envelope"]["identifiers"]["email"].startswith(PREFIX)
    assert plain["payload"]["traits"]["plan"].startswith(PREFIX) and plain["envelope"]["source"] == "crm"
    assert codec.encode(events[0]) == codec.encode(events[0])  # deterministic: replays write the same bytes


def test_deleting_a_subjects_key_erases_only_that_subject(data_dir: Path) -> None:
    settings = Settings.load(data_dir=data_dir)
    codec = open_codec(settings)
    ada, alan = identify(1, "ada@example.com", "Augusta"), identify(2, "alan@example.com", "Alan")
    encoded = [codec.encode(ada), codec.encode(alan)]
    keys = LocalKeyStore(data_dir)
    assert keys.delete([subject_of(ada)]) == 1
    keys.close()
    fresh = open_codec(settings)  # another process: no cached key
    erased, kept = fresh.decode(encoded[0]), fresh.decode(encoded[1])
    assert erased["envelope"]["identifiers"]["email"] is None
    assert erased["envelope"]["identifiers"]["external_ids"] == {}
    assert erased["envelope"]["context"]["ip"] is None
    assert erased["payload"]["first_name"] is None and erased["payload"]["traits"] == {}
    assert (
        erased["envelope"]["source"] == "crm"
        and erased["envelope"]["event_id"] == ada["envelope"]["event_id"]
    )
    assert kept == in_clear(codec, alan)
    assert b"ada@example.com" not in (data_dir / KEYS_FILE).read_bytes()


def test_identity_events_without_identifiers_use_the_profile_as_subject(data_dir: Path) -> None:
    codec = open_codec(Settings.load(data_dir=data_dir))
    event = validate_event(
        {
            "envelope": {
                "event_id": "00000000-0000-4000-8000-000000000009",
                "event_type": "identifier_linked",
                "occurred_at": AT,
                "received_at": AT,
                "source": "patron.identity",
                "identifiers": {},
                "context": {},
            },
            "payload": {
                "cause_event_id": "c",
                "profile_id": "P-1",
                "identifiers": [{"kind": "email", "value": "ada@example.com"}],
            },
        }
    )
    assert subject_of(event) == profile_subject("P-1")
    value = codec.encode(event)
    assert b"ada@example.com" not in value
    assert codec.decode(value)["payload"]["identifiers"] == [{"kind": "email", "value": "ada@example.com"}]
    LocalKeyStore(data_dir).delete([profile_subject("P-1")])
    assert open_codec(Settings.load(data_dir=data_dir)).decode(value)["payload"]["identifiers"] == []


def test_two_processes_creating_one_subjects_key_get_the_same_key(data_dir: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from patron.events.keystore import LocalKeyStore; "
        "print(LocalKeyStore(Path(sys.argv[1])).data_key('email:abc').hex())"
    )
    others = [
        subprocess.Popen([sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    mine = LocalKeyStore(data_dir).data_key("email:abc")
    assert mine is not None and len(mine) == 64
    assert {process.communicate(timeout=60)[0].strip() for process in others} == {mine.hex()}


def test_a_wrong_master_key_is_one_clear_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    LocalKeyStore(data_dir).data_key("email:abc")
    monkeypatch.setenv(MASTER_KEY_ENV, "A" * 43 + "=")
    with pytest.raises(PatronError, match="does not open with this master key"):
        LocalKeyStore(data_dir).data_key("email:abc")
    monkeypatch.setenv(MASTER_KEY_ENV, "not base64!")
    with pytest.raises(PatronError, match="base64 of 32 random bytes"):
        LocalKeyStore(data_dir)
