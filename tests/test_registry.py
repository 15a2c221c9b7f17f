"""The registry over real HTTP on loopback: Patron's server, Patron's client, Confluent's client, the CLI.

The server runs in uvicorn on a free port over a real SQLite registry. The wire-compatibility
tests use ``confluent_kafka.schema_registry`` itself: what Patron's codec writes, Confluent's
AvroDeserializer reads, and what Confluent's AvroSerializer writes, Patron's codec reads.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import serve_registry

from patron.cli import main
from patron.errors import EXIT_INVALID, EXIT_REFUSED, EXIT_UNAVAILABLE, PatronError, Unavailable
from patron.events.codec import EventCodec
from patron.schemas.catalogue import AVRO_DIR, default_catalogue
from patron.schemas.compatibility import InvalidSchema
from patron.schemas.confluent import ConfluentRegistry
from patron.schemas.registry import FileRegistry, IncompatibleSchema
from patron.schemas.registry_server import MEDIA_TYPE

ORDER = default_catalogue().get("order_completed")
SUBJECT = ORDER.subject  # record-name strategy: patron.events.OrderCompleted
PATRON = str(Path(sys.executable).with_name("patron"))


def order_schema(*extra_fields: dict[str, Any], revenue: str = "double") -> dict[str, Any]:
    """The catalogue's order_completed schema with payload fields added or ``revenue`` retyped."""
    schema = copy.deepcopy(ORDER.schema)
    fields = next(f for f in schema["fields"] if f["name"] == "payload")["type"]["fields"]
    next(f for f in fields if f["name"] == "revenue")["type"] = revenue
    fields.extend({"doc": "added", **f} for f in extra_fields)
    return schema


GIFT_NOTE = {"name": "gift_note", "type": ["null", "string"], "default": None}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def registry_url(tmp_path: Path) -> Iterator[str]:
    """Patron's registry server over a fresh embedded registry, in uvicorn on a free loopback port."""
    with serve_registry(tmp_path / "served.db") as url:
        yield url


@pytest.fixture
def client(registry_url: str) -> Iterator[ConfluentRegistry]:
    registry = ConfluentRegistry(registry_url)
    yield registry
    registry.close()


# --- Patron's client against Patron's server -------------------------------------------------------------


def test_register_is_idempotent_and_versions_follow(client: ConfluentRegistry):
    first = client.register(SUBJECT, ORDER.schema)
    assert client.register(SUBJECT, ORDER.schema) == first
    assert client.versions(SUBJECT) == [1]
    second = client.register(SUBJECT, order_schema(GIFT_NOTE))
    assert second != first
    assert client.versions(SUBJECT) == [1, 2]
    assert client.subjects() == [SUBJECT]
    latest = client.get(SUBJECT)
    assert (latest.version, latest.schema_id, latest.schema) == (2, second, order_schema(GIFT_NOTE))
    assert client.get(SUBJECT, 1).schema == ORDER.schema


def test_schema_by_id_comes_from_the_server_and_is_cached(registry_url: str, client: ConfluentRegistry):
    schema_id = client.register(SUBJECT, ORDER.schema)
    fresh = ConfluentRegistry(registry_url)
    try:
        assert fresh.schema(schema_id) == ORDER.schema
        fresh.close()  # a second lookup must not need the server
        assert fresh.schema(schema_id) == ORDER.schema
    finally:
        fresh.close()


def test_incompatible_schema_is_refused_with_the_field_named(client: ConfluentRegistry):
    client.register(SUBJECT, ORDER.schema)
    breaking = order_schema(revenue="string")
    (problem,) = client.check(SUBJECT, breaking)
    assert problem.startswith("payload.revenue: type changed from double to string")
    with pytest.raises(
        IncompatibleSchema, match=re.escape("payload.revenue: type changed from double to string")
    ):
        client.register(SUBJECT, breaking)
    assert client.versions(SUBJECT) == [1]
    assert client.check(SUBJECT, order_schema(GIFT_NOTE)) == []
    assert client.check("patron.events.NotYet", breaking) == []


def test_invalid_schema_is_refused(client: ConfluentRegistry):
    with pytest.raises(InvalidSchema, match="unknown type 'nope'"):
        client.register("x", {"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})


def test_compatibility_config_global_and_per_subject(client: ConfluentRegistry):
    client.register(SUBJECT, ORDER.schema)
    assert client.compatibility() == "BACKWARD"
    assert client.compatibility(SUBJECT) == "BACKWARD"
    client.set_compatibility("full", SUBJECT)
    assert (client.compatibility(), client.compatibility(SUBJECT)) == ("BACKWARD", "FULL")
    assert client.check(SUBJECT, order_schema({"name": "n", "type": "int", "default": 0})) == []
    (problem,) = client.check(SUBJECT, order_schema(revenue="long"))
    assert "which FULL compatibility forbids" in problem
    with pytest.raises(ValueError, match="unknown compatibility level 'SIDEWAYS'"):
        client.set_compatibility("SIDEWAYS")


def test_unknown_things_raise_key_error(client: ConfluentRegistry):
    with pytest.raises(KeyError, match="not registered"):
        client.get("patron.events.Nope")
    client.register(SUBJECT, ORDER.schema)
    with pytest.raises(KeyError, match="version 5 of subject"):
        client.get(SUBJECT, 5)
    with pytest.raises(KeyError, match="schema id 999"):
        client.schema(999)
    assert client.versions("patron.events.Nope") == []


def test_unreachable_registry_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    registry = ConfluentRegistry(url, timeout=2)
    with pytest.raises(Unavailable) as failed:
        registry.subjects()
    message = str(failed.value)
    assert url in message and "unreachable" in message and "\n" not in message
    assert failed.value.exit_code == EXIT_UNAVAILABLE


def test_registry_url_must_be_http():
    with pytest.raises(PatronError, match="not an http"):
        ConfluentRegistry("kafka://localhost:9092")


# --- the REST surface as standard tools see it -----------------------------------------------------------


def test_rest_answers_use_confluent_media_type_and_error_bodies(registry_url: str):
    with httpx.Client(base_url=registry_url) as http:
        body = {"schema": json.dumps(ORDER.schema)}
        registered = http.post(f"/subjects/{SUBJECT}/versions", json=body)
        assert registered.status_code == 200
        assert registered.headers["content-type"].startswith(MEDIA_TYPE)
        schema_id = registered.json()["id"]

        found = http.post(f"/subjects/{SUBJECT}", json=body).json()
        assert (found["subject"], found["version"], found["id"]) == (SUBJECT, 1, schema_id)
        assert json.loads(found["schema"]) == ORDER.schema
        assert json.loads(http.get(f"/schemas/ids/{schema_id}").json()["schema"]) == ORDER.schema
        assert http.get(f"/subjects/{SUBJECT}/versions/latest").json()["version"] == 1
        assert http.get(f"/subjects/{SUBJECT}/versions/1/schema").json() == ORDER.schema

        def error(response: httpx.Response) -> tuple[int, int]:
            return response.status_code, response.json()["error_code"]

        assert error(http.get("/subjects/nope/versions")) == (404, 40401)
        assert error(http.get(f"/subjects/{SUBJECT}/versions/7")) == (404, 40402)
        assert error(http.get(f"/subjects/{SUBJECT}/versions/first")) == (422, 42202)
        assert error(http.get("/schemas/ids/4242")) == (404, 40403)
        other = {"schema": json.dumps(order_schema(GIFT_NOTE))}
        assert error(http.post(f"/subjects/{SUBJECT}", json=other)) == (404, 40403)
        assert error(http.post(f"/subjects/{SUBJECT}/versions", json={"schema": "{"})) == (422, 42201)
        assert error(http.post(f"/subjects/{SUBJECT}/versions", json={**body, "schemaType": "PROTOBUF"})) == (
            422,
            42201,
        )
        assert error(http.put("/config", json={"compatibility": "SOMETIMES"})) == (422, 42203)
        not_avro = {
            "schema": json.dumps({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})
        }
        for path in (f"/subjects/{SUBJECT}/versions", f"/compatibility/subjects/{SUBJECT}/versions"):
            assert error(http.post(path, json=not_avro)) == (422, 42201), path
        assert error(http.post(f"/compatibility/subjects/{SUBJECT}/versions/1", json=not_avro)) == (
            422,
            42201,
        )
        assert error(http.get("/no/such/route")) == (404, 404)

        breaking = {"schema": json.dumps(order_schema(revenue="string"))}
        refused = http.post(f"/subjects/{SUBJECT}/versions", json=breaking)
        assert error(refused) == (409, 409)
        assert "payload.revenue" in refused.json()["message"]
        verdict = http.post(f"/compatibility/subjects/{SUBJECT}/versions/latest", json=breaking).json()
        assert verdict["is_compatible"] is False
        assert verdict["messages"][0].startswith("payload.revenue: type changed from double to string")
        assert http.post(f"/compatibility/subjects/{SUBJECT}/versions/1", json=other).json() == {
            "is_compatible": True,
            "messages": [],
        }
        assert http.put(f"/config/{SUBJECT}", json={"compatibility": "none"}).json() == {
            "compatibility": "NONE"
        }
        assert http.get(f"/config/{SUBJECT}").json() == {"compatibilityLevel": "NONE"}
        assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
        assert http.post(f"/subjects/{SUBJECT}/versions", json=breaking).status_code == 200
        assert http.get(f"/subjects/{SUBJECT}/versions").json() == [1, 2]


# --- wire compatibility with Confluent's own client and serdes -------------------------------------------


def test_confluent_client_registers_reads_config_and_sees_409(registry_url: str):
    confluent = SchemaRegistryClient({"url": registry_url})
    schema_id = confluent.register_schema(SUBJECT, Schema(json.dumps(ORDER.schema), "AVRO"))
    assert json.loads(confluent.get_schema(schema_id).schema_str) == ORDER.schema
    latest = confluent.get_latest_version(SUBJECT)
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert confluent.get_subjects() == [SUBJECT]
    assert confluent.get_versions(SUBJECT) == [1]
    assert confluent.get_compatibility() == "BACKWARD"
    breaking = Schema(json.dumps(order_schema(revenue="string")), "AVRO")
    assert confluent.test_compatibility(SUBJECT, breaking) is False
    with pytest.raises(SchemaRegistryError) as refused:
        confluent.register_schema(SUBJECT, breaking)
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert "payload.revenue" in refused.value.error_message


def same_event(decoded: dict[str, Any], sent: dict[str, Any]) -> None:
    assert str(decoded["envelope"]["event_id"]) == sent["envelope"]["event_id"]
    for key in ("event_type", "occurred_at", "received_at", "source", "identifiers", "context"):
        assert decoded["envelope"][key] == sent["envelope"][key], key
    assert decoded["payload"] == sent["payload"]


def test_patron_encoded_record_decodes_with_confluent_deserializer(
    registry_url: str, client: ConfluentRegistry, make_event: Callable[..., dict[str, Any]]
):
    event = make_event("order_completed", 3)
    data = EventCodec(client).encode(event)
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    decoded = deserializer(data, SerializationContext("patron.events", MessageField.VALUE))
    same_event(decoded, event)


@pytest.mark.parametrize(
    "conf",
    [{"use.latest.version": True}, {}],
    ids=["use.latest.version", "lookup by subject"],
)
def test_confluent_serialized_record_decodes_with_patron_codec(
    registry_url: str,
    client: ConfluentRegistry,
    make_event: Callable[..., dict[str, Any]],
    conf: dict[str, Any],
):
    codec = EventCodec(client)
    schema_id = codec.schema_id("order_completed")
    serializer = AvroSerializer(
        SchemaRegistryClient({"url": registry_url}),
        json.dumps(ORDER.schema),
        conf={"auto.register.schemas": False, "subject.name.strategy": record_subject_name_strategy, **conf},
    )
    event = make_event("order_completed", 5)
    data = serializer(event, SerializationContext("patron.events", MessageField.VALUE))
    assert int.from_bytes(data[1:5], "big") == schema_id
    same_event(codec.decode(data), event)


# --- the CLI ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


Patron = Callable[..., Ran]


@pytest.fixture
def patron(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Patron:
    """Run the ``patron`` entry point in-process with these arguments: its exit code, stdout and stderr.

    In-process because importing every command group costs a second per process; the real
    process is exercised by the serve and unreachable-registry tests.
    """
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("PATRON_REGISTRY", raising=False)
    monkeypatch.delenv("PATRON_COMPATIBILITY", raising=False)

    def run(*args: str | Path, data_dir: Path | None = None) -> Ran:
        prefix = ["--data-dir", str(data_dir)] if data_dir else []
        monkeypatch.setattr(sys, "argv", ["patron", *prefix, *map(str, args)])
        capsys.readouterr()
        try:
            main.run()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def write_avsc(path: Path, schema: dict[str, Any]) -> Path:
    path.write_text(json.dumps(schema, indent=2), encoding="utf-8")
    return path


def test_cli_check_registers_catalogue_then_refuses_incompatible_avsc(
    patron: Patron, data_dir: Path, tmp_path: Path
):
    first = patron("schemas", "check", data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    assert f"order_completed ({SUBJECT}): registered as version 1" in first.stdout
    again = patron("schemas", "check", data_dir=data_dir)
    assert f"order_completed ({SUBJECT}): already registered" in again.stdout

    bad = write_avsc(tmp_path / "order_v2.avsc", order_schema(revenue="string"))
    refused = patron("schemas", "check", bad, "--register", data_dir=data_dir)
    assert refused.returncode == EXIT_REFUSED
    (line,) = [ln for ln in refused.stdout.splitlines() if "payload.revenue" in ln]
    assert line.startswith("✗ order_v2.avsc: payload.revenue: type changed from double to string")
    assert "nothing was registered" in refused.stderr
    assert FileRegistry(data_dir / "registry.db").versions(SUBJECT) == [1]

    good = write_avsc(tmp_path / "order_v3.avsc", order_schema(GIFT_NOTE))
    checked = patron("schemas", "check", good, data_dir=data_dir)
    assert checked.returncode == 0
    assert "BACKWARD compatible with 1 version(s)" in checked.stdout
    assert FileRegistry(data_dir / "registry.db").versions(SUBJECT) == [
        1
    ]  # paths are checked, not registered
    registered = patron("schemas", "check", good, "--register", data_dir=data_dir)
    assert registered.returncode == 0
    assert "order_v3.avsc (patron.events.OrderCompleted): registered as version 2" in registered.stdout


def test_cli_check_of_a_changed_shared_type_checks_every_event_using_it(
    patron: Patron, data_dir: Path, tmp_path: Path
):
    assert patron("schemas", "check", data_dir=data_dir).returncode == 0
    campaign = json.loads((AVRO_DIR / "patron.common.Campaign.avsc").read_text())
    campaign["fields"].append({"name": "gclid", "type": "string", "doc": "Google click id."})
    changed = write_avsc(tmp_path / "patron.common.Campaign.avsc", campaign)
    refused = patron("schemas", "check", changed, data_dir=data_dir)
    assert refused.returncode == EXIT_REFUSED
    problems = [ln for ln in refused.stdout.splitlines() if ln.startswith("✗")]
    assert len(problems) == len(default_catalogue())
    assert any(
        ln.startswith(
            "✗ order_completed (via patron.common.Campaign): envelope.context.campaign.gclid: new field"
        )
        for ln in problems
    )
    unchanged = write_avsc(
        tmp_path / "patron.common.Context.avsc",
        json.loads((AVRO_DIR / "patron.common.Context.avsc").read_text()),
    )
    same = patron("schemas", "check", unchanged, data_dir=data_dir)
    assert same.returncode == 0
    assert "nothing to check: patron.common.Context.avsc changes no event schema" in same.stdout


def test_cli_check_reports_a_broken_file_with_its_line(patron: Patron, data_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken.avsc"
    broken.write_text('{"type": "record",\n "name": "X", "fields": [}', encoding="utf-8")
    result = patron("schemas", "check", broken, data_dir=data_dir)
    assert result.returncode == EXIT_INVALID
    assert f"{broken}, line 2: not JSON" in result.stderr


def test_cli_list_show_and_compatibility(patron: Patron, data_dir: Path):
    assert patron("schemas", "check", data_dir=data_dir).returncode == 0
    listed = patron("schemas", "list", data_dir=data_dir)
    assert listed.returncode == 0
    row = next(ln for ln in listed.stdout.splitlines() if " order_completed " in ln)
    assert SUBJECT in row and "v1: " in row and row.rstrip("│ ").endswith(str(len(ORDER.pii_fields)))

    shown = patron("schemas", "show", "order_completed", data_dir=data_dir)
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == ORDER.schema
    assert f"{SUBJECT} version 1" in shown.stderr
    assert "envelope.identifiers.email" in shown.stderr
    missing = patron("schemas", "show", "order_completed", "--version", "9", data_dir=data_dir)
    assert missing.returncode == EXIT_INVALID
    assert "version 9 of patron.events.OrderCompleted is not registered; its versions are 1" in missing.stderr
    typo = patron("schemas", "show", "order_complete", data_dir=data_dir)
    assert typo.returncode == EXIT_INVALID and "did you mean 'order_completed'?" in typo.stderr

    assert patron("schemas", "compatibility", data_dir=data_dir).stdout.strip() == "BACKWARD"
    changed = patron("schemas", "compatibility", "full", "--subject", "order_completed", data_dir=data_dir)
    assert changed.stdout.strip() == f"compatibility of {SUBJECT}: FULL (was BACKWARD)"
    assert patron("schemas", "compatibility", "-s", SUBJECT, data_dir=data_dir).stdout.strip() == "FULL"
    assert patron("schemas", "compatibility", data_dir=data_dir).stdout.strip() == "BACKWARD"
    wrong = patron("schemas", "compatibility", "sometimes", data_dir=data_dir)
    assert wrong.returncode == EXIT_INVALID and "unknown compatibility" in wrong.stderr


def test_cli_serve_answers_and_cli_checks_through_it(patron: Patron, data_dir: Path, tmp_path: Path):
    client_dir = tmp_path / "client"
    port = free_port()
    server = subprocess.Popen(
        [PATRON, "--data-dir", str(data_dir), "schemas", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATRON_REGISTRY": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"{url}/subjects").json() == []
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    "`patron schemas serve` did not start"
                )
                time.sleep(0.1)
        registered = patron("--registry", url, "schemas", "check", data_dir=client_dir)
        assert registered.returncode == 0, registered.stderr
        assert SUBJECT in httpx.get(f"{url}/subjects").json()
        bad = write_avsc(tmp_path / "order_v2.avsc", order_schema(revenue="string"))
        refused = patron("--registry", url, "schemas", "check", bad, data_dir=client_dir)
        assert refused.returncode == EXIT_REFUSED
        assert "order_v2.avsc: payload.revenue: type changed from double to string" in refused.stdout
    finally:
        server.terminate()
        server.wait(10)
    assert FileRegistry(data_dir / "registry.db").versions(SUBJECT) == [1]


def test_cli_process_exits_4_with_one_line_when_the_registry_is_unreachable(data_dir: Path):
    """A real ``patron`` process: the exit code and the single error line are what a shell sees."""
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [PATRON, "--data-dir", str(data_dir), "--registry", url, "schemas", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stderr.count("\n") == 1 and url in result.stderr and "unreachable" in result.stderr


def test_cli_check_of_a_new_event_type_resolves_shared_types_from_the_catalogue(
    patron: Patron, data_dir: Path, tmp_path: Path
):
    new_type = {
        "type": "record",
        "name": "GiftWrapped",
        "namespace": "patron.events",
        "event_type": "gift_wrapped",
        "doc": "An order line was gift-wrapped.",
        "fields": [
            {"name": "envelope", "type": "patron.common.Envelope", "doc": "The common envelope."},
            {"name": "payload", "type": "patron.events.GiftWrappedPayload", "doc": "What was wrapped."},
        ],
    }
    payload = {
        "type": "record",
        "name": "GiftWrappedPayload",
        "namespace": "patron.events",
        "fields": [{"name": "order_id", "type": "string", "doc": "Order id in the shop."}],
    }
    write_avsc(tmp_path / "patron.events.GiftWrappedPayload.avsc", payload)  # a new type beside the file
    path = write_avsc(tmp_path / "patron.events.GiftWrapped.avsc", new_type)
    result = patron("schemas", "check", path, "--register", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "✓ patron.events.GiftWrapped.avsc (patron.events.GiftWrapped): new subject" in result.stdout
    assert "registered as version 1" in result.stdout
    stored = FileRegistry(data_dir / "registry.db").get("patron.events.GiftWrapped").schema
    assert stored["fields"][0]["type"]["name"] == "patron.common.Envelope"  # inlined, no references
    assert stored["fields"][1]["type"]["fields"][0]["name"] == "order_id"
