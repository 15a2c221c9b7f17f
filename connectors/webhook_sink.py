"""The webhook sink: segment changes and triggers POSTed to a marketing tool, at least once, in order.

Why at-least-once and not exactly-once: an HTTP receiver cannot take part in the log's
transaction, so a crash between "the receiver said 200" and "the position is committed"
re-sends that record. Every request therefore carries ``Idempotency-Key: <event_id>`` (the
event id is deterministic: one per transition), and receivers drop a key they have seen.
What is never allowed is a loss: a record's position is committed only after it was
delivered, deliberately skipped (filtered / suppressed) or filed as a dead letter.

Records are handled one at a time in partition order, so one profile's transitions (the key
is the profile id) reach the receiver in the order they happened. The consumer position lives
where the backend keeps positions: the embedded log's ``consumer_offsets`` table, or the
Kafka consumer group's committed offsets. docs/delivery.md is the receiver's side of this contract.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastavro.read import SchemaResolutionError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import EventCodec
from patron.streams.log import Record
from patron.streams.positioned import PositionedSource

SINK_SOURCE = "webhook-sink"
"""The ``source`` of the sink's dead letters: ``patron dlq list --source webhook-sink``."""
SINK_CONNECTOR = "webhook"
BACKOFF_CAP = 30.0
"""Longest wait between two attempts (seconds), whatever the exponent says."""
RETRIED_4XX = frozenset({408, 429})
"""Request Timeout and Too Many Requests: the only client errors that mean "try again later"."""
TOP_FIELDS = ("event_id", "event_type", "occurred_at", "profile_id")
UNREADABLE = (ValueError, KeyError, EOFError, IndexError, SchemaResolutionError)
"""What decoding a record that is not a readable event raises (a registry outage raises PatronError)."""


# -- what is sent -------------------------------------------------------------------------------
def webhook_body(event: dict[str, Any]) -> bytes:
    """The JSON body: envelope id/type/time and the profile first, then every payload field.

    ``traits`` values are JSON text in Avro (a map of strings); they are decoded here so a receiver
    reads ``{"clv.value": 412.0}``, not a string it must parse again. Times are ISO 8601 in UTC.
    """
    envelope, payload = event["envelope"], event["payload"]
    body: dict[str, Any] = {
        "event_id": envelope["event_id"],
        "event_type": envelope["event_type"],
        "occurred_at": envelope["occurred_at"],
        "profile_id": payload.get("profile_id"),
    }
    for name, value in payload.items():
        if name in TOP_FIELDS:
            continue
        body[name] = _decoded_traits(value) if name == "traits" and isinstance(value, dict) else value
    return orjson.dumps(body, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _decoded_traits(traits: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for name, text in traits.items():
        try:
            decoded[name] = orjson.loads(text)
        except orjson.JSONDecodeError:  # written by something other than the engine: pass it on as is
            decoded[name] = text
    return decoded


def signature(secret: bytes, body: bytes) -> str:
    """``X-Patron-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_headers(event_id: str, event_type: str, body: bytes, secret: bytes | None) -> dict[str, str]:
    """The headers of one attempt (the timestamp is the attempt's, so it changes on a retry)."""
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": event_id,
        "X-Patron-Event-Type": event_type,
        "X-Patron-Timestamp": str(int(time.time())),
    }
    if secret:
        headers["X-Patron-Signature"] = signature(secret, body)
    return headers


def public_url(url: str) -> str:
    """``url`` without its query and credentials, for messages and dead letters (tokens stay out)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


# -- which records are sent ---------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """``--segments`` (a segment or trigger name must be listed) and ``--channel`` (consent-aware)."""

    segments: frozenset[str] | None = None
    channel: str | None = None

    def verdict(self, payload: dict[str, Any]) -> str:
        """``deliver``, ``filtered`` (not a listed segment/trigger) or ``suppressed`` (channel not allowed).

        A change whose ``channels`` lack the sink's channel is never POSTed: either the customer did
        not consent to it (the engine lists it in ``suppressed``) or the definition does not target it.
        """
        if self.segments is not None:
            name = payload.get("segment") or payload.get("trigger")
            if name not in self.segments:
                return "filtered"
        if self.channel is not None and self.channel not in (payload.get("channels") or ()):
            return "suppressed"
        return "deliver"


# -- how it is sent -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempts:
    """How a delivery ended: the last response's status or transport error, and the attempts made."""

    count: int
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self, url: str) -> str:
        """Why it was not delivered, in one line, with the fix where one is known."""
        last = f"HTTP {self.status}" if self.status is not None else self.error
        if self.status is not None and not _retryable_status(self.status):
            hint = (
                "a redirect: configure the final URL"
                if 300 <= self.status < 400
                else "a client error is not retried: the receiver refuses the request itself"
            )
            return f"webhook {url} answered {last} ({hint})"
        return f"webhook {url} failed on all {self.count} attempt(s); last: {last}"


def _retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRIED_4XX


class _RetryAfterOrBackoff:
    """Tenacity's wait: the receiver's ``Retry-After`` (seconds or an HTTP date) when its last answer
    had one, else ``backoff``; never longer than ``BACKOFF_CAP``. A receiver that says when it can
    take more (429, 503) is not hammered earlier, and not left waiting longer than it asked."""

    def __init__(self, backoff: Callable[[RetryCallState], float]):
        self.backoff = backoff

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            asked = retry_after_seconds(outcome.result().headers.get("retry-after"))
            if asked is not None:
                return min(asked, BACKOFF_CAP)
        return self.backoff(state)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from ``now``; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _last_outcome(state: RetryCallState) -> httpx.Response | BaseException | None:
    """What tenacity hands back when it gives up: the last response, or the last transport error."""
    outcome = state.outcome
    if outcome is None:
        return None
    return outcome.exception() if outcome.failed else outcome.result()


class WebhookClient:
    """POSTs bodies to one URL with retries: exponential backoff with jitter, capped at ``BACKOFF_CAP``.

    Retried: connection errors, timeouts, 5xx, 408 and 429 (after the receiver's ``Retry-After``
    when it sends one). Anything else ends the delivery at once:
    2xx is success, other 3xx/4xx are a permanent refusal that another attempt would repeat.
    ``stop`` ends the waiting between attempts early (shutdown); the delivery then counts as undone.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        stop: threading.Event | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PatronError(
                f"webhook URL {url!r} is not an http(s) URL: use https://HOST/PATH", EXIT_INVALID
            )
        self.url = url
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.stop = stop or threading.Event()
        self._http = httpx.Client(timeout=timeout)

    def post(self, body: bytes, event_id: str, event_type: str) -> Attempts:
        made = 0

        def send() -> httpx.Response:
            nonlocal made
            made += 1
            headers = webhook_headers(event_id, event_type, body, self.secret)
            return self._http.post(self.url, content=body, headers=headers)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_when_event_set(self.stop),
            wait=_RetryAfterOrBackoff(
                wait_exponential_jitter(multiplier=self.backoff, max=BACKOFF_CAP, jitter=self.backoff)
            ),
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda response: _retryable_status(response.status_code)),
            sleep=self.stop.wait,
            retry_error_callback=_last_outcome,
        )
        last = retrying(send)
        if isinstance(last, httpx.Response):
            return Attempts(made, status=last.status_code)
        return Attempts(made, error=f"{type(last).__name__}: {last}" if last else "not attempted")

    def close(self) -> None:
        self._http.close()


# -- the sink -----------------------------------------------------------------------------------
@dataclass
class SinkCounts:
    """What a run did with the records it read; ``retries`` are extra attempts, over all records."""

    delivered: int = 0
    suppressed: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    retries: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class WebhookSink:
    """Reads ``source``, POSTs each selected event through ``client``, dead-letters what cannot be delivered."""

    def __init__(
        self,
        source: PositionedSource,
        codec: EventCodec,
        client: WebhookClient,
        dead_letters: DeadLetterStore,
        *,
        selection: Selection | None = None,
        group: str = "",
    ):
        self.source = source
        self.codec = codec
        self.client = client
        self.dead_letters = dead_letters
        self.selection = selection or Selection()
        self.group = group
        self.counts = SinkCounts()

    def run(self, *, follow: bool = False, on_record: Callable[[str], None] | None = None) -> SinkCounts:
        """Handle records until the end (``follow`` False) or until ``client.stop`` is set."""
        stop = self.client.stop
        for record in self.source.records(follow, stop):
            outcome = self.handle(record)
            if outcome is None:  # stopped while waiting to retry: not committed, re-delivered next run
                break
            self.source.commit(record)
            self.counts.add(outcome)
            if on_record is not None:
                on_record(outcome)
        return self.counts

    def handle(self, record: Record) -> str | None:
        """The outcome of one record: ``delivered``, ``filtered``, ``suppressed``, ``dead_lettered``,
        or None when a shutdown interrupted its delivery."""
        try:
            event = self.codec.decode(record.value)
        except UNREADABLE as exc:
            self._file(record, f"record is not a readable event ({type(exc).__name__}: {exc})", {})
            return "dead_lettered"
        verdict = self.selection.verdict(event["payload"])
        if verdict != "deliver":
            return verdict
        envelope = event["envelope"]
        attempts = self.client.post(webhook_body(event), envelope["event_id"], envelope["event_type"])
        self.counts.retries += attempts.count - 1
        if attempts.delivered:
            return "delivered"
        if self.client.stop.is_set():
            return None
        details = {
            "event_id": envelope["event_id"],
            "attempts": attempts.count,
            "status": attempts.status,
            "error": attempts.error,
        }
        self._file(record, attempts.describe(public_url(self.client.url)), details)
        return "dead_lettered"

    def _file(self, record: Record, reason: str, details: dict[str, Any]) -> None:
        self.dead_letters.add(
            [
                DeadLetter(
                    source=SINK_SOURCE,
                    connector=SINK_CONNECTOR,
                    location=f"{record.topic} partition {record.partition} offset {record.offset}",
                    reason=reason,
                    raw=record.value,
                    received_at=datetime.now(UTC),
                    details={
                        **details,
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "group": self.group,
                        "url": public_url(self.client.url),
                    },
                )
            ]
        )
