"""The collector over real HTTP: ``patron serve`` runs as a subprocess on a loopback port.

What a 200 promises is checked by reading the events back from the log with ``LocalLog`` and
the codec right after the answer; rejections by reading the dead-letter store. The real
Segment and RudderStack Python SDKs are pointed at the collector unchanged but for the host.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi

from patron.config import Settings
from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.connectors.segment import message_event_id
from patron.connectors.write_keys import WriteKeyStore
from patron.events.codec import EventCodec, open_codec
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, EventLog, scan

PATRON = str(Path(sys.executable).with_name("patron"))
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running ``patron serve`` and what a test needs to talk to it and check its output."""

    url: str
    data_dir: Path
    key: str
    keys: WriteKeyStore
    log: EventLog
    codec: EventCodec
    process: subprocess.Popen[bytes]
    output: Path

    def post(self, path: str, body: Any, *, key: str | None = "default", **kwargs: Any) -> httpx.Response:
        auth = (self.key if key == "default" else key, "") if key is not None else None
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return httpx.post(self.url + path, content=content, auth=auth, timeout=30, **kwargs)

    def events(self) -> list[dict[str, Any]]:
        return [self.codec.decode(record.value) for record in scan(self.log, EVENTS_TOPIC)]

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["envelope"]["identifiers"]["user_id"] == user_id]

    def letters(self) -> list[DeadLetter]:
        return list(DeadLetterStore(self.log))


def start_server(
    data_dir: Path, *, broker: str | None = None, external_id_trait: str | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``patron [--broker B] serve --port P [--external-id-trait T]``, once it answers /health."""
    port = _free_port()
    broker_option = ["--broker", broker] if broker else []
    trait_option = ["--external-id-trait", external_id_trait] if external_id_trait else []
    output = data_dir.parent / f"serve-{port}.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [
                PATRON,
                "--data-dir",
                str(data_dir),
                *broker_option,
                "serve",
                "--port",
                str(port),
                *trait_option,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url, output
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"patron serve did not come up on {url}:\n{output.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen[bytes], output: Path) -> None:
    process.terminate()
    process.wait(timeout=30)
    text = output.read_text()
    assert "Traceback" not in text, text[-5000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("collector") / "data"
    data_dir.mkdir()
    keys = WriteKeyStore(data_dir / "write_keys.db")
    key = keys.create("web")
    process, url, output = start_server(data_dir, external_id_trait="crm_id")
    log = LocalLog(data_dir)
    codec = open_codec(Settings.load(data_dir=data_dir))
    try:
        yield Server(url, data_dir, key, keys, log, codec, process, output)
    finally:
        log.close()
        stop_server(process, output)


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


OK = {"success": True}


@pytest.mark.parametrize(
    ("call", "body", "event_type"),
    [
        ("track", {"event": "Signed In", "properties": {"method": "sso"}}, "logged_in"),
        ("identify", {"traits": {"email": "Ann@Example.com", "crm_id": "C-1"}}, "identify"),
        ("page", {"name": "Home", "properties": {"url": "https://x.example/"}}, "page_viewed"),
        ("screen", {"name": "Checkout"}, "screen_viewed"),
        ("group", {"groupId": "g-1", "traits": {"name": "Acme"}}, "group"),
        ("alias", {"previousId": "anon-1"}, "alias"),
    ],
)
def test_every_call_endpoint_stores_its_event(
    server: Server, call: str, body: dict[str, Any], event_type: str
) -> None:
    who = user()
    response = server.post(f"/v1/{call}", {"userId": who, **body})
    assert (response.status_code, response.json()) == (200, OK)
    (event,) = server.events_of(who)
    assert event["envelope"]["event_type"] == event_type
    assert event["envelope"]["source"] == "web"
    if call == "identify":
        assert event["envelope"]["identifiers"]["email"] == "ann@example.com"
        assert event["envelope"]["identifiers"]["external_ids"] == {"crm_id": "C-1"}  # --external-id-trait


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import"])
def test_batch_and_import_store_every_message(server: Server, path: str) -> None:
    who = user()
    batch = [
        {"type": "identify", "userId": who, "traits": {"name": "Ann"}},
        {"type": "track", "userId": who, "event": "Wishlist Shared", "properties": {"n": 1}},
        {"type": "page", "userId": who, "properties": {"path": "/"}},
    ]
    response = server.post(path, {"batch": batch, "sentAt": datetime.now(UTC).isoformat()})
    assert (response.status_code, response.json()) == (200, OK)
    assert sorted(e["envelope"]["event_type"] for e in server.events_of(who)) == [
        "custom_event",
        "identify",
        "page_viewed",
    ]


def test_gzip_bodies_are_accepted(server: Server) -> None:
    who = user()
    body = gzip.compress(orjson.dumps({"batch": [{"type": "track", "userId": who, "event": "Zipped"}]}))
    response = server.post("/v1/batch", body, headers={"Content-Encoding": "gzip"})
    assert (response.status_code, response.json()) == (200, OK)
    assert [e["payload"]["name"] for e in server.events_of(who)] == ["Zipped"]


def test_write_key_in_the_body_and_every_way_auth_fails(server: Server) -> None:
    who = user()
    assert (
        server.post("/v1/track", {"writeKey": server.key, "userId": who, "event": "A"}, key=None).status_code
        == 200
    )
    revoked = server.keys.create("web")
    server.keys.revoke(revoked[:12])
    letters_before = len(server.letters())
    refused = {
        "no key": server.post("/v1/track", {"userId": who, "event": "B"}, key=None),
        "unknown key": server.post("/v1/track", {"userId": who, "event": "B"}, key="ptn_nope"),
        "revoked key": server.post("/v1/track", {"userId": who, "event": "B"}, key=revoked),
        "bearer": server.post(
            "/v1/track", {"userId": who, "event": "B"}, key=None, headers={"Authorization": "Bearer x"}
        ),
        "body differs": server.post("/v1/track", {"writeKey": revoked, "userId": who, "event": "B"}),
        "unreadable body": server.post("/v1/track", b"{not json", key=None),
    }
    for case, response in refused.items():
        assert response.status_code == 401, case
        assert response.json()["success"] is False and response.json()["code"] == "unauthorized", case
        assert response.headers["www-authenticate"] == 'Basic realm="patron"'
    assert "could not be read for a writeKey" in refused["unreadable body"].json()["message"]
    assert [e["payload"]["name"] for e in server.events_of(who)] == ["A"]
    assert len(server.letters()) == letters_before  # unauthenticated input is never stored


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/batch", b'{"batch": [', "request body is not valid JSON"),
        ("/v1/track", b"[1, 2]", "request body must be a JSON object"),
        ("/v1/batch", b'{"batch": {"type": "track"}}', "batch: expected an array of messages"),
        ("/v1/batch", b'{"batch": [], "bacth": []}', "bacth: unknown field in a batch request"),
        ("/v1/track", b"", "request body is empty"),
    ],
)
def test_unusable_bodies_are_400_and_filed_with_their_raw_bytes(
    server: Server, path: str, body: bytes, reason: str
) -> None:
    response = server.post(path, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["success"] is False and answer["code"] == "invalid_request"
    assert answer["errors"][0]["index"] is None and answer["errors"][0]["reason"].startswith(reason)
    letter = next(letter for letter in server.letters() if letter.raw == body and letter.location == path)
    assert letter.reason.startswith(reason)
    assert letter.source == "web" and letter.connector == "segment"


def test_a_mixed_batch_keeps_its_valid_messages_and_files_the_others(server: Server) -> None:
    who = user()
    batch: list[Any] = [
        {"type": "track", "userId": who, "event": "Good One"},
        {"type": "identify", "userId": who, "traits": {"email": "no-at-sign"}},
        "not a message",
        {"type": "track", "userId": who, "event": "x", "propertys": {}},
        {
            "type": "track",
            "userId": who,
            "event": "order_completed",
            "properties": {"order_id": "O", "tip": 1},
        },
        {"type": "track", "userId": who, "event": "Good Two"},
    ]
    response = server.post("/v1/batch", {"batch": batch})
    assert response.status_code == 400
    errors = {e["index"]: e["reason"] for e in response.json()["errors"]}
    assert sorted(errors) == [1, 2, 3, 4]
    assert "envelope.identifiers.email" in errors[1]
    assert errors[2] == "a message must be a JSON object, got a string 'not a message'"
    assert errors[3].startswith("propertys: unknown field for a track message")
    assert "payload.tip: unknown field" in errors[4] and "payload.revenue: required" in errors[4]
    assert response.json()["message"].startswith("4 of 6 message(s) rejected; #1: identify: ")
    assert sorted(e["payload"]["name"] for e in server.events_of(who)) == ["Good One", "Good Two"]
    letters = {(letter.location, letter.raw): letter.reason for letter in server.letters()}
    for index, reason in errors.items():
        assert reason.endswith(letters[(f"/v1/batch #{index}", orjson.dumps(batch[index]))])


def test_a_retried_message_is_a_duplicate_not_a_second_event(server: Server) -> None:
    who = user()
    batch = {
        "batch": [
            {"type": "track", "userId": who, "event": "Once", "messageId": str(uuid.uuid4())},
            {"type": "track", "userId": who, "event": "Once too", "messageId": "ajs-7f3e2a"},
        ]
    }
    for _ in range(3):
        assert server.post("/v1/batch", batch).json() == OK
    assert sorted(e["payload"]["name"] for e in server.events_of(who)) == ["Once", "Once too"]


def test_clock_skew_is_corrected_with_sent_at_and_the_receive_time(server: Server) -> None:
    who = user()
    before = datetime.now(UTC)
    body = {
        "userId": who,
        "event": "Skewed",
        "timestamp": "2001-01-01T00:00:00Z",
        "sentAt": "2001-01-01T00:00:30Z",
    }
    assert server.post("/v1/track", body).json() == OK
    after = datetime.now(UTC)
    (event,) = server.events_of(who)
    received = event["envelope"]["received_at"]
    assert before <= received <= after
    assert event["envelope"]["occurred_at"] == received - timedelta(seconds=30)


def test_size_limits(server: Server) -> None:
    who = user()
    big = {"userId": who, "event": "Big", "properties": {"blob": "x" * 33_000}}
    single = server.post("/v1/track", big)
    assert single.status_code == 400
    assert single.json()["message"].startswith("request body is over the 32 KB limit")
    letter = next(
        x
        for x in server.letters()
        if x.location == "/v1/track" and x.raw.startswith(b'{"userId":"' + who.encode())
    )
    assert len(letter.raw) == 32 * 1024  # what was read, not the whole body

    batch = server.post(
        "/v1/batch", {"batch": [{"type": "track", **big}, {"type": "track", "userId": who, "event": "Small"}]}
    )
    assert batch.status_code == 400
    (error,) = batch.json()["errors"]
    assert error["index"] == 0 and "over Segment's 32 KB limit per message" in error["reason"]
    assert [e["payload"]["name"] for e in server.events_of(who)] == ["Small"]

    many = [{"type": "track", "userId": who, "event": "Many", "properties": {"blob": "y" * 20_000}}] * 30
    too_many = server.post("/v1/batch", {"batch": many})
    assert too_many.status_code == 400
    assert too_many.json()["message"].startswith("request body is over the 500 KB limit")

    bomb = gzip.compress(orjson.dumps({"batch": [], "sentAt": "0" * 5_000_000}))
    assert len(bomb) < 32 * 1024
    exploded = server.post("/v1/batch", bomb, headers={"Content-Encoding": "gzip"})
    assert exploded.status_code == 400
    assert "over the 500 KB limit once decompressed" in exploded.json()["message"]

    unknown = server.post("/v1/batch", b"{}", headers={"Content-Encoding": "br"})
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "Content-Encoding 'br' is not supported; send gzip or no encoding"


def test_openapi_document_and_health(server: Server) -> None:
    response = httpx.get(server.url + "/openapi.yaml")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/yaml")
    document = yaml.safe_load(response.text)
    validate_openapi(document)
    calls = {f"/v1/{c}" for c in ("track", "identify", "page", "screen", "group", "alias", "batch", "import")}
    assert set(document["paths"]) == calls | {"/health", "/openapi.yaml"}
    for path in calls:
        assert set(document["paths"][path]["post"]["responses"]) == {"200", "400", "401", "503"}
    health = httpx.get(server.url + "/health")
    assert health.json() == {"status": "ok", "backend": f"local://{server.data_dir}"}
    assert httpx.get(server.url + "/v1/track").status_code == 405


def test_browsers_may_post_from_any_origin(server: Server) -> None:
    origin = {"Origin": "https://shop.example"}
    preflight = httpx.options(
        server.url + "/v1/batch",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    who = user()
    body = {"writeKey": server.key, "userId": who, "event": "From Browser"}
    response = server.post("/v1/track", body, key=None, headers={**origin, "Content-Type": "text/plain"})
    assert (response.status_code, response.headers["access-control-allow-origin"]) == (200, "*")
    assert [e["payload"]["name"] for e in server.events_of(who)] == ["From Browser"]


def test_concurrent_requests_are_all_stored(server: Server) -> None:
    who = user()
    statuses: list[int] = []

    def send(n: int) -> None:
        batch = [{"type": "track", "userId": who, "event": f"Burst {n}-{i}"} for i in range(5)]
        statuses.append(server.post("/v1/batch", {"batch": batch}).status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 40
    assert len({e["payload"]["name"] for e in server.events_of(who)}) == 200


def test_segment_python_sdk_unchanged_but_for_the_host(server: Server) -> None:
    from segment import analytics

    errors: list[Exception] = []
    analytics.write_key, analytics.host = server.key, server.url
    analytics.on_error = lambda error, items: errors.append(error)
    analytics.default_client = None
    who = user()
    try:
        analytics.identify(who, {"email": "Seg.Ment@Example.com", "firstName": "Seg", "plan": "pro"})
        analytics.track(who, "Order Completed", {"order_id": "O-7", "revenue": 42.0, "currency": "EUR"})
        analytics.page(who, "Docs", "Pricing", {"url": "https://x.example/pricing"})
        analytics.screen(who, "Shop", "Checkout")
        analytics.group(who, "acme", {"name": "Acme", "employees": 40})
        analytics.alias("anon-42", who)
        analytics.flush()
    finally:
        analytics.shutdown()
        analytics.default_client = None
    assert errors == []
    events = {e["envelope"]["event_type"]: e for e in server.events_of(who)}
    assert set(events) == {"identify", "order_completed", "page_viewed", "screen_viewed", "group", "alias"}
    assert events["identify"]["envelope"]["identifiers"]["email"] == "seg.ment@example.com"
    assert events["identify"]["payload"]["traits"] == {"plan": '"pro"'}
    assert events["order_completed"]["payload"]["revenue"] == 42.0
    assert events["page_viewed"]["payload"]["category"] == "Docs"
    assert events["group"]["payload"]["employees"] == 40
    assert events["alias"]["payload"]["previous_id"] == "anon-42"
    assert all(e["envelope"]["context"]["channel"] == "api" for e in events.values())


def test_rudderstack_python_sdk_unchanged_but_for_the_data_plane_url(server: Server) -> None:
    import rudderstack.analytics as rudder_analytics

    errors: list[Exception] = []
    rudder_analytics.write_key, rudder_analytics.dataPlaneUrl = server.key, server.url
    rudder_analytics.on_error = lambda error, items: errors.append(error)
    rudder_analytics.default_client = None
    who = user()
    try:  # RudderStack's SDK gzips its batches by default
        rudder_analytics.identify(who, {"email": "rudder@example.com", "name": "Rudi"})
        rudder_analytics.track(who, "Product Viewed", {"product_id": "P-1", "price": 9.5})
        rudder_analytics.page(who, "Docs", "Home", {"path": "/"})
        rudder_analytics.screen(who, "Shop", "Cart")
        rudder_analytics.group(who, "acme", {"name": "Acme"})
        rudder_analytics.alias("anon-7", who)
        rudder_analytics.flush()
    finally:
        rudder_analytics.shutdown()
        rudder_analytics.default_client = None
    assert errors == []
    events = {e["envelope"]["event_type"]: e for e in server.events_of(who)}
    assert set(events) == {"identify", "product_viewed", "page_viewed", "screen_viewed", "group", "alias"}
    assert events["identify"]["envelope"]["identifiers"]["email"] == "rudder@example.com"
    assert events["identify"]["payload"]["name"] == "Rudi"
    assert events["product_viewed"]["payload"]["price"] == 9.5
    assert all(e["envelope"]["source"] == "web" for e in events.values())


def test_kafka_backend(kafka_bootstrap: str, tmp_path: Path) -> None:
    from patron.streams.kafka_log import KafkaLog

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key = WriteKeyStore(data_dir / "write_keys.db").create("shop")
    process, url, output = start_server(data_dir, broker=f"kafka://{kafka_bootstrap}")
    try:
        assert httpx.get(url + "/health").json()["backend"] == f"kafka://{kafka_bootstrap}"
        who = user()
        batch = [
            {"type": "identify", "userId": who, "traits": {"email": "k@example.com"}},
            {
                "type": "track",
                "userId": who,
                "event": "Order Completed",
                "properties": {"order_id": "K-1", "revenue": 5, "currency": "EUR"},
            },
            {"type": "track", "userId": who, "event": "x", "timestamp": "never"},
        ]
        response = httpx.post(
            url + "/v1/batch", content=orjson.dumps({"batch": batch}), auth=(key, ""), timeout=60
        )
        assert response.status_code == 400
        assert [e["index"] for e in response.json()["errors"]] == [2]
    finally:
        stop_server(process, output)
    log = KafkaLog(kafka_bootstrap)
    try:
        codec = open_codec(Settings.load(data_dir=data_dir))
        ids = {message_event_id(message, "shop") for message in batch[:2]}
        found = [codec.decode(r.value) for r in scan(log, EVENTS_TOPIC) if r.event_id in ids]
        letters = [
            letter
            for letter in DeadLetterStore(log)
            if letter.source == "shop" and who.encode() in letter.raw
        ]
    finally:
        log.close()
    assert sorted(e["envelope"]["event_type"] for e in found) == ["identify", "order_completed"]
    assert all(e["envelope"]["identifiers"]["user_id"] == who for e in found)
    (letter,) = letters
    assert orjson.loads(letter.raw) == batch[2]
    assert letter.reason.startswith("timestamp: 'never' is not an ISO-8601 time")


# -- fuzzing ---------------------------------------------------------------------------------------

TEXT = st.characters(exclude_categories=["Cs"])  # lone surrogates are not valid UTF-8, so not JSON
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=8), inner, max_size=3),
    max_leaves=12,
)
KEYS = [
    "order_id",
    "revenue",
    "currency",
    "products",
    "email",
    "phone",
    "name",
    "url",
    "cart_id",
    "price",
    "ip",
]
fuzzed_objects = st.dictionaries(st.sampled_from(KEYS) | st.text(TEXT, max_size=6), json_values, max_size=4)
times = st.sampled_from(["2024-05-17T09:30:12.345Z", "2024-05-17T11:30:12+02:00", "2024-05-17", "soon"])


def shaped(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Messages of one type whose structure is mostly right and whose values are anything."""
    text = st.text(TEXT, min_size=1, max_size=8)
    required: dict[str, Any] = {"type": st.just(kind), "userId": text | json_values}
    required |= {
        "track": {"event": st.sampled_from(["Order Completed", "Cart Viewed", "feature_used", "x"])},
        "group": {"groupId": text | json_values},
        "alias": {"previousId": text | json_values},
    }.get(kind, {})
    optional = {
        "messageId": st.uuids().map(str) | text | json_values,
        "timestamp": times | json_values,
        "sentAt": times,
        "context": fuzzed_objects,
        "properties" if kind in ("track", "page", "screen") else "traits": fuzzed_objects,
        "anonymousId": text,
    }
    return st.fixed_dictionaries(required, optional=optional)


messages = st.one_of(
    *(shaped(kind) for kind in ("track", "identify", "page", "screen", "group", "alias")), json_values
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages, max_size=6))
def test_fuzzed_batches_never_fail_and_every_message_is_accounted_for(
    server: Server, batch: list[Any]
) -> None:
    response = server.post("/v1/batch", {"batch": batch})
    assert response.status_code in (200, 400), response.text
    rejected = (
        {e["index"]: e["reason"] for e in response.json().get("errors", [])}
        if response.status_code == 400
        else {}
    )
    stored = {str(e["envelope"]["event_id"]) for e in server.events()}
    letters = {(letter.location, letter.raw) for letter in server.letters()}
    for index, message in enumerate(batch):
        if index in rejected:
            assert (f"/v1/batch #{index}", orjson.dumps(message)) in letters
        else:
            assert message_event_id(message, "web") in stored


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]), body=messages)
def test_fuzzed_single_calls_never_fail_and_are_accounted_for(server: Server, call: str, body: Any) -> None:
    raw = orjson.dumps(body)
    response = server.post(f"/v1/{call}", raw)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        (error,) = response.json()["errors"]
        where = f"/v1/{call}" if error["index"] is None else f"/v1/{call} #0"
        assert (where, raw) in {(letter.location, letter.raw) for letter in server.letters()}
    else:
        event_id = message_event_id({"type": call, **body}, "web")
        assert event_id in {str(e["envelope"]["event_id"]) for e in server.events()}
