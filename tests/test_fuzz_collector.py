"""Fuzz proof for the collector: thousands of malformed payloads over real HTTP, every one accounted for.

``patron serve`` (uvicorn) runs as a subprocess on a loopback port, as in ``test_collector.py``.
Every request is reconciled against what the log gained while it ran, read back from the
event and dead-letter topics by offset (not trusted from the answer):

- the server answers 200 or 400, never 5xx, and never logs a traceback (checked at teardown);
- every rejected message has a dead letter with its raw bytes, its location and a reason,
  filed once (letter ids are derived from location and bytes, so a payload hypothesis sends
  twice is filed once: the :class:`Ledger` remembers what was already filed);
- every accepted message's event is in the log exactly once (a retried id is a duplicate);
- accepted + rejected == sent, and messages built to be valid (or invalid) are accepted (or rejected).

Hypothesis runs derandomized so CI replays the same examples; ``deadline=None`` because a
request includes a durable append.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_collector import messages as shaped_messages
from test_collector import start_server, stop_server

from patron.connectors.collector import BATCH_LIMIT, GZIP_SLACK, MESSAGE_LIMIT, TOO_DEEP
from patron.connectors.deadletter import DeadLetter
from patron.connectors.segment import message_event_id
from patron.connectors.write_keys import WriteKeyStore
from patron.streams.local_log import LocalLog
from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC, Record

FUZZ = settings(
    deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
CALLS = ("track", "identify", "page", "screen", "group", "alias")


@dataclass
class Ledger:
    """What the server stored so far, to tell a new letter or event from one filed by an earlier example."""

    letters: set[tuple[str, bytes]] = field(default_factory=set, repr=False)
    event_ids: set[str] = field(default_factory=set, repr=False)


@dataclass
class Fuzzed:
    """The running collector, a reader on its log, and the ledger of what it stored."""

    url: str
    key: str
    log: LocalLog
    ledger: Ledger = field(default_factory=Ledger)

    def __repr__(self) -> str:  # hypothesis prints it with each failing example: not the whole ledger
        return f"Fuzzed({self.url})"

    def post(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url + path, content=content, auth=(self.key, ""), headers=headers, timeout=60)

    def heads(self) -> dict[str, dict[int, int]]:
        return {topic: self.log.end_offsets(topic) for topic in (EVENTS_TOPIC, DEAD_LETTER_TOPIC)}

    def since(self, heads: dict[str, dict[int, int]], topic: str) -> list[Record]:
        """The records ``topic`` gained after ``heads`` was taken."""
        found: list[Record] = []
        for partition, end in self.log.end_offsets(topic).items():
            offset = heads[topic].get(partition, 0)
            while offset < end:
                batch = self.log.read(topic, partition, offset, 1000)
                found += batch
                offset += len(batch)
        return found


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    data_dir = tmp_path_factory.mktemp("fuzz-collector") / "data"
    data_dir.mkdir()
    key = WriteKeyStore(data_dir / "write_keys.db").create("fuzz")
    process, url, output = start_server(data_dir)
    log = LocalLog(data_dir)
    try:
        yield Fuzzed(url, key, log)
    finally:
        log.close()
        stop_server(process, output)  # asserts the server never logged a traceback


def reconcile(
    fuzzed: Fuzzed,
    heads: dict[str, dict[int, int]],
    rejected: dict[int | None, tuple[str, bytes]],
    accepted_ids: list[str],
) -> None:
    """The log gained exactly the letters of ``rejected`` and the events of ``accepted_ids`` not stored before."""
    letters = [DeadLetter.from_json(r.value) for r in fuzzed.since(heads, DEAD_LETTER_TOPIC)]
    new_letters = {(letter.location, letter.raw) for letter in letters}
    assert len(new_letters) == len(letters), "a letter was filed twice"
    filed_before = set(fuzzed.ledger.letters)
    fuzzed.ledger.letters |= new_letters  # first, so that hypothesis replaying a failure is judged right
    assert new_letters == set(rejected.values()) - filed_before
    assert all(letter.reason and letter.source == "fuzz" for letter in letters)
    assert not any("Patron bug" in letter.reason for letter in letters), [x.reason for x in letters]

    events = [r.event_id for r in fuzzed.since(heads, EVENTS_TOPIC)]
    stored_before = set(fuzzed.ledger.event_ids)
    fuzzed.ledger.event_ids |= set(events)
    assert len(set(events)) == len(events), "an event is in the log twice"
    assert not set(events) & stored_before, "an event already stored was stored again"
    assert set(accepted_ids) <= fuzzed.ledger.event_ids, "an accepted message is not in the log"
    if not accepted_ids:
        assert events == []


# -- messages ----------------------------------------------------------------------------------------
INTS = st.integers(-(2**63), 2**64 - 1)  # what JSON (orjson) carries exactly
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
SMALL_JSON = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
NOT_OBJECT = (
    st.none()
    | st.booleans()
    | INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.lists(SMALL_JSON)
)
NOT_LIST_OF_OBJECTS = NOT_OBJECT.filter(
    lambda v: v is not None and not (isinstance(v, list) and all(isinstance(item, dict) for item in v))
)
NOT_TEXT = st.none() | st.booleans() | INTS | st.lists(SMALL_JSON, max_size=2)
BAD_TIMES = (
    st.sampled_from(
        [
            "0000-01-01T00:00:00Z",  # year 0 does not exist
            "0001-01-01T00:00:00+01:00",  # valid ISO, but before year 1 in UTC
            "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
            "NaN",
            "Infinity",
            "2024-13-45T25:61:00Z",
            "",
            "yesterday",
            "2024-05-17T09:30:12.345Z" + "9" * 40,
        ]
    )
    | INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.dictionaries(TEXT, TEXT, max_size=2)
)


@dataclass(frozen=True)
class Deep:
    """A track message whose properties nest ``depth`` levels: encoded by hand, as no encoder goes so deep."""

    depth: int

    def encode(self) -> bytes:
        return (
            b'{"type":"track","userId":"deep","event":"Deep","properties":'
            + b'{"a":' * self.depth
            + b"1"
            + b"}" * self.depth
            + b"}"
        )


def ids() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


def user_ids() -> st.SearchStrategy[str]:
    return st.text("abcdefghijklmnop0123456789-", min_size=1, max_size=16).map(lambda s: f"fz-{s}")


# Built to pass: a valid envelope and payload with arbitrary free-form content.
valid = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("track"),
            "messageId": ids(),
            "userId": user_ids(),
            "event": st.sampled_from(["Fuzz Valid", "Wishlist Shared", "feature used"]),
            "properties": st.dictionaries(TEXT, SMALL_JSON, max_size=4),
        },
        optional={"timestamp": st.sampled_from(["2024-05-17T09:30:12.345Z", "2024-05-17T11:30:12+02:00"])},
    ),
    st.fixed_dictionaries(
        {"type": st.just("identify"), "messageId": ids(), "userId": user_ids()},
        optional={
            "traits": st.fixed_dictionaries(
                {}, optional={"plan": SMALL_JSON, "email": st.just("a@b.example")}
            )
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("alias"), "messageId": ids(), "userId": user_ids(), "previousId": user_ids()}
    ),
    st.fixed_dictionaries(
        {"type": st.just("page"), "messageId": ids(), "anonymousId": user_ids()},
        optional={"properties": st.fixed_dictionaries({"url": st.just("https://x.example/p")})},
    ),
)

track = {"type": st.just("track"), "userId": user_ids(), "event": st.just("Fuzz Bad")}
# Built to fail: each names one thing wrong, the server must refuse it and file it.
invalid = st.one_of(
    NOT_OBJECT,
    st.fixed_dictionaries(
        {
            **track,
            "type": TEXT.filter(lambda t: t not in CALLS)
            | NOT_TEXT
            | SMALL_JSON.filter(lambda v: isinstance(v, dict | list)),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(CALLS), "event": st.just("x"), "traits": st.just({})}
    ),  # no user
    st.fixed_dictionaries({**track, "userID": TEXT}),  # a typo'd field
    st.fixed_dictionaries({**track, "extra": SMALL_JSON}),  # a field the spec does not have
    st.fixed_dictionaries({**track, "event": NOT_TEXT | st.just("  ")}),
    st.fixed_dictionaries({**track, "properties": NOT_OBJECT.filter(lambda v: v is not None)}),
    st.fixed_dictionaries({**track, "context": NOT_OBJECT.filter(lambda v: v is not None)}),
    st.fixed_dictionaries({**track, "timestamp": BAD_TIMES}),
    st.fixed_dictionaries({**track, "originalTimestamp": BAD_TIMES}),
    st.fixed_dictionaries(
        {**track, "timestamp": st.just("9999-12-31T23:59:59Z"), "sentAt": st.just("0001-01-01T00:00:00Z")}
    ),
    st.fixed_dictionaries(
        {
            **track,
            "messageId": st.booleans() | st.lists(TEXT, max_size=2) | st.dictionaries(TEXT, TEXT, max_size=1),
        }
    ),
    st.fixed_dictionaries({**track, "writeKey": st.just("ptn_someone_else")}),
    st.fixed_dictionaries(
        {
            **track,
            "context": st.fixed_dictionaries({"externalIds": NOT_LIST_OF_OBJECTS}),
        }
    ),
    st.fixed_dictionaries(
        {
            **track,
            "properties": st.fixed_dictionaries(
                {"blob": st.integers(MESSAGE_LIMIT, MESSAGE_LIMIT + 8000).map(lambda n: "x" * n)}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            **track,
            "event": st.just("order_completed"),
            "properties": st.fixed_dictionaries({"order_id": TEXT, "bogus": SMALL_JSON}),
        }
    ),
    st.fixed_dictionaries(
        {
            **track,
            "event": st.just("Order Completed"),
            "properties": st.fixed_dictionaries(
                {
                    "order_id": st.just("O"),
                    "revenue": st.just(1),
                    "currency": st.just("EUR"),
                    "products": NOT_LIST_OF_OBJECTS,
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("identify"),
            "userId": user_ids(),
            "traits": st.fixed_dictionaries({"email": st.sampled_from(["no-at-sign", "@", "a@", "x" * 300])}),
        }
    ),
    st.integers(260, 1000).map(Deep),
)


def encode_batch(batch: list[Any]) -> tuple[bytes, list[bytes | None]]:
    """The request body and each message's raw bytes (None for a Deep one: its letter keeps the whole body)."""
    parts = [m.encode() if isinstance(m, Deep) else orjson.dumps(m) for m in batch]
    body = b'{"batch":[' + b",".join(parts) + b"]}"
    return body, [None if isinstance(m, Deep) else part for m, part in zip(batch, parts, strict=True)]


kinds = st.one_of(
    valid.map(lambda m: ("valid", m)),
    invalid.map(lambda m: ("invalid", m)),
    shaped_messages.map(lambda m: ("any", m)),
)


@settings(FUZZ, max_examples=250)
@given(items=st.lists(kinds, min_size=1, max_size=20), repeat=st.booleans())
def test_mixed_batches_keep_the_valid_and_file_the_invalid_messages(
    fuzzed: Fuzzed, items: list[tuple[str, Any]], repeat: bool
) -> None:
    if repeat:  # a duplicate id inside one batch: accepted twice, stored once
        items = [*items, items[0]]
    kinds_sent = [kind for kind, _ in items]
    batch = [message for _, message in items]
    body, raws = encode_batch(batch)
    assume(len(body) <= BATCH_LIMIT)  # an oversized body is the other test's case
    heads = fuzzed.heads()
    response = fuzzed.post("/v1/batch", body)

    assert response.status_code in (200, 400), response.text
    answer = response.json()
    errors = (
        {e["index"]: e["reason"] for e in answer.get("errors", [])} if response.status_code == 400 else {}
    )
    assert None not in errors, answer
    assert (response.status_code == 200) == (not errors)
    accepted = [i for i in range(len(batch)) if i not in errors]
    assert len(accepted) + len(errors) == len(batch)  # counts reconciled
    for index, kind in enumerate(kinds_sent):
        if kind == "valid":
            assert index not in errors, (batch[index], errors.get(index))
        elif kind == "invalid":
            assert index in errors, batch[index]
    for index, reason in errors.items():
        assert reason.strip(), index
        if isinstance(batch[index], Deep):
            assert reason == TOO_DEEP
    rejected = {i: (f"/v1/batch #{i}", raws[i] if raws[i] is not None else body) for i in errors}
    reconcile(fuzzed, heads, rejected, [message_event_id(batch[i], "fuzz") for i in accepted])


# -- whole bodies ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Body:
    """A request whose body as a whole is unusable, and the bytes its one dead letter must keep."""

    path: str
    content: bytes
    headers: dict[str, str]
    kept: bytes
    reason: str


def _body(
    path: str, content: bytes, reason: str, *, encoding: str | None = None, kept: bytes | None = None
) -> Body:
    headers = {"Content-Encoding": encoding} if encoding else {}
    return Body(path, content, headers, content if kept is None else kept, reason)


def _limit(path: str) -> int:
    return BATCH_LIMIT if path.endswith(("batch", "import")) else MESSAGE_LIMIT


PATHS = st.sampled_from([f"/v1/{call}" for call in (*CALLS, "batch", "import")])
GOOD = b'{"batch":[{"type":"track","userId":"fz-body","event":"x"}]}'


@st.composite
def bad_bodies(draw: st.DrawFn) -> Body:
    path = draw(PATHS)
    choice = draw(st.integers(0, 12))
    if choice == 0:  # junk bytes: rarely JSON, never a JSON object
        junk = draw(st.binary(min_size=1, max_size=300).filter(lambda b: not b.lstrip().startswith(b"{")))
        return _body(path, junk, "request body")
    if choice == 1:  # invalid UTF-8 inside a JSON string
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        return _body(
            path, b'{"userId":"' + bad + b'","event":"x","batch":[]}', "request body is not valid JSON"
        )
    if choice == 2:  # truncated JSON
        cut = draw(st.integers(1, len(GOOD) - 1))
        return _body(path, GOOD[:cut], "request body is not valid JSON")
    if choice == 3:  # nesting far past the parser's depth limit (10k levels)
        depth = draw(st.integers(1025, 10_000 if _limit(path) == BATCH_LIMIT else 5000))  # 6 bytes a level
        return _body(path, b'{"a":' * depth + b"1" + b"}" * depth, "request body is not valid JSON")
    if choice == 4:  # NaN, Infinity and over-long numbers are not JSON
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"0x10", b"01"]))
        return _body(path, b'{"userId":"u","timestamp":' + literal + b"}", "request body is not valid JSON")
    if choice == 5:  # Content-Encoding gzip, body is not gzip at all
        junk = draw(st.binary(min_size=1, max_size=200).filter(lambda b: not b.startswith(b"\x1f\x8b")))
        return _body(path, junk, "request body is", encoding="gzip")  # not valid, or truncated, gzip
    if choice == 6:  # gzip cut short
        whole = gzip.compress(GOOD + b" " * draw(st.integers(0, 2000)))
        cut = draw(st.integers(1, len(whole) - 1))
        return _body(path, whole[:cut], "request body is", encoding=draw(st.sampled_from(["gzip", "x-gzip"])))
    if choice == 7:  # gzip of something that is not JSON
        junk = draw(st.binary(min_size=1, max_size=200).filter(lambda b: not b.lstrip().startswith(b"{")))
        return _body(path, gzip.compress(junk), "request body", encoding="gzip", kept=junk)
    if choice == 8:  # a gzip bomb: small on the wire, far over the limit inflated
        bomb = gzip.compress(b'{"batch":[],"sentAt":"' + b"0" * draw(st.integers(2, 8)) * 1_000_000 + b'"}')
        return _body(path, bomb, "request body is over", encoding="gzip")
    if choice == 9:  # megabytes of body
        size = draw(st.integers(1, 3)) * 1_000_000
        huge = b'{"userId":"u","event":"' + b"x" * size + b'"}'
        return _body(path, huge, "request body is over", kept=huge[: _limit(path)])
    if choice == 10:  # an encoding the collector does not speak
        encoding = draw(st.sampled_from(["br", "deflate", "zstd", "compress"]))
        return _body(path, GOOD, "Content-Encoding", encoding=encoding)
    if choice == 11:  # JSON, but not an object
        value = draw(NOT_OBJECT)
        return _body(path, orjson.dumps(value), "request body must be a JSON object")
    return _body(path, b"", "request body is empty")


@settings(FUZZ, max_examples=200)
@given(body=bad_bodies())
def test_unusable_bodies_are_one_dead_letter_each_and_store_no_event(fuzzed: Fuzzed, body: Body) -> None:
    heads = fuzzed.heads()
    response = fuzzed.post(body.path, body.content, body.headers)
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["index"] is None and error["reason"].startswith(body.reason), error
    kept = body.kept
    if body.headers and len(body.content) > _limit(body.path) + GZIP_SLACK:
        kept = body.content[: _limit(body.path) + GZIP_SLACK]
    reconcile(fuzzed, heads, {None: (body.path, kept)}, [])


@settings(FUZZ, max_examples=20)
@given(call=st.sampled_from(CALLS), depth=st.integers(255, 1000))
def test_single_calls_nested_too_deep_to_re_encode_are_filed_not_crashed(
    fuzzed: Fuzzed, call: str, depth: int
) -> None:
    content = b'{"userId":"deep","traits":' + b"[" * depth + b"]" * depth + b"}"
    heads = fuzzed.heads()
    response = fuzzed.post(f"/v1/{call}", content)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"index": None, "reason": TOO_DEEP}]
    reconcile(fuzzed, heads, {None: (f"/v1/{call}", content)}, [])


def test_the_collector_survived_the_fuzzing(fuzzed: Fuzzed) -> None:
    """After everything above the server still answers and stores a plain event."""
    who = f"fz-after-{uuid.uuid4().hex[:8]}"
    heads = fuzzed.heads()
    message = {"type": "track", "userId": who, "event": "Still Alive", "messageId": str(uuid.uuid4())}
    response = fuzzed.post("/v1/batch", orjson.dumps({"batch": [message]}))
    assert (response.status_code, response.json()) == (200, {"success": True})
    reconcile(fuzzed, heads, {}, [message_event_id(message, "fuzz")])


# -- coverage-guided: atheris ------------------------------------------------------------------------
ATHERIS_RUNS = 100_000
ATHERIS_HARNESS = """
import sys
import atheris
import patron.connectors.pipeline, patron.events.codec, starlette.applications  # not instrumented: slow

with atheris.instrument_imports():
    import orjson
    from patron.connectors.collector import _candidates
    from patron.connectors.segment import SegmentError, segment_to_events

def one_body(data):
    # What the collector does with a body before the log: parse, split, map; only SegmentError may escape.
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(body, dict):
        return
    candidates, problem = _candidates(body, data, "batch", "key")
    for candidate in candidates:
        if candidate.error is None:
            try:
                segment_to_events(candidate.message, "fuzz")
            except SegmentError:
                pass

atheris.Setup([sys.argv[0], f"-runs={sys.argv[1]}", "-seed=1", "-max_len=4096"], one_body)
atheris.Fuzz()
"""


def test_atheris_finds_no_crash_in_parsing_and_mapping() -> None:
    """libFuzzer mutates bodies guided by coverage; an exception other than SegmentError is a crash."""
    run = subprocess.run(
        [sys.executable, "-c", ATHERIS_HARNESS, str(ATHERIS_RUNS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"Done {ATHERIS_RUNS} runs" in run.stderr
