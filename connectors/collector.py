"""The Segment-compatible HTTP collector: ``/v1/track`` ... ``/v1/batch`` onto the event log.

An SDK that speaks Segment's HTTP tracking API (Segment's and RudderStack's SDKs, curl)
only needs the collector's URL as its host. The collector answers ``200 {"success": true}``
only once every event of the request is durably appended, so an SDK that saw a 200 may
forget the events; anything else makes a well-behaved SDK keep and retry them (5xx) or
report them (4xx). Each message a request carries is accepted or filed as a dead letter
with its raw JSON and the reason, which the 400 answer lists by index; the valid messages
of a batch are kept either way.

The event loop only does HTTP: reading, decompressing and parsing bodies and looking up
write keys. Mapping, validation and appends run on one writer thread which takes every
request queued since its last commit and appends them together (group commit), so many
small concurrent requests cost one durable write instead of one each.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import queue
import threading
import zlib
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from itertools import groupby
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from patron.config import Settings
from patron.connectors.pipeline import Ingestor
from patron.connectors.segment import SegmentError, segment_to_events
from patron.connectors.write_keys import WriteKeyStore
from patron.events.codec import EventCodec, open_codec
from patron.streams.backends import open_log
from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC, EventLog

CONNECTOR = "segment"
MESSAGE_LIMIT = 32 * 1024
"""Segment's limit for one message (bytes of JSON); also the body limit of the single-call endpoints."""
BATCH_LIMIT = 500 * 1024
"""Segment's limit for one ``/v1/batch`` request body (bytes of JSON, after decompression)."""
GZIP_SLACK = 1024
"""Compressed bodies may exceed the limit by gzip's framing for incompressible content."""
MAX_GROUP_MESSAGES = 5000
INGESTOR_BUFFER = 1 << 40
"""Never reached: the writer flushes each group itself, so an append error fails the whole group."""
MAX_PENDING_REQUESTS = 1000
SINGLE_CALLS = ("track", "identify", "page", "screen", "group", "alias")
BATCH_FIELDS = frozenset({"batch", "sentAt", "writeKey", "context", "integrations", "_metadata"})
EXTERNAL_ID_TRAITS_ENV = "PATRON_EXTERNAL_ID_TRAITS"
TOO_DEEP = "message nests objects/arrays more than 254 levels deep; flatten it"
"""JSON parsing allows 1024 levels but encoding a message again (its raw bytes, event id) allows 254."""

logger = logging.getLogger("patron.collector")


@dataclass
class Candidate:
    """One message of a request, or the reason it cannot even be a message (``error``)."""

    index: int | None
    raw: bytes
    message: Any = None
    error: str | None = None


@dataclass
class Job:
    """The messages of one authenticated request, waiting for the writer thread."""

    source: str
    location: str
    candidates: list[Candidate]
    received_at: datetime
    sent_at: Any = None
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)


class GroupCommitWriter:
    """The thread that maps, validates and appends requests, many per durable append.

    A job's future resolves to its rejections (``[{"index", "reason"}]``) only after the
    append that holds its events returned, or fails with the append's error.
    """

    def __init__(self, log: EventLog, codec: EventCodec, external_id_traits: Iterable[str] = ()):
        self.log = log
        self.codec = codec
        self.external_id_traits = tuple(external_id_traits)
        self._queue: queue.Queue[Job | None] = queue.Queue(MAX_PENDING_REQUESTS)
        self._thread = threading.Thread(target=self._run, name="patron-collector-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every job already queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> Future[list[dict[str, Any]]]:
        """Queue ``job``; raises ``queue.Full`` when the writer is this far behind."""
        self._queue.put_nowait(job)
        return job.future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group, size = [first], len(first.candidates)
            while size < MAX_GROUP_MESSAGES:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                group.append(job)
                size += len(job.candidates)
            self._commit(group)

    def _commit(self, group: list[Job]) -> None:
        group.sort(key=lambda job: job.source)
        for source, jobs in groupby(group, key=lambda job: job.source):
            batch = list(jobs)
            try:
                ingestor = Ingestor(
                    self.log, self.codec, source=source, connector=CONNECTOR, batch_size=INGESTOR_BUFFER
                )
                results = [
                    [r for c in job.candidates if (r := self._ingest(ingestor, job, c))] for job in batch
                ]
                ingestor.flush()
            except Exception as exc:
                logger.exception("appending %d request(s) of source %s failed", len(batch), source)
                for job in batch:
                    job.future.set_exception(exc)
                continue
            for job, rejections in zip(batch, results, strict=True):
                job.future.set_result(rejections)

    def _ingest(self, ingestor: Ingestor, job: Job, candidate: Candidate) -> dict[str, Any] | None:
        """Queue one message's events on ``ingestor``; the rejection, or None when accepted."""
        location = job.location if candidate.index is None else f"{job.location} #{candidate.index}"
        reason = candidate.error
        if reason is None:
            try:
                events = segment_to_events(
                    candidate.message,
                    job.source,
                    received_at=job.received_at,
                    sent_at=job.sent_at,
                    external_id_traits=self.external_id_traits,
                )
                # A companion shares the typed event's envelope and carries only strings, so
                # only the first event of a message can be refused: a message is all or nothing.
                for event in events:
                    refused = ingestor.add(event, candidate.raw, location)
                    if refused is not None:  # the ingestor filed the dead letter
                        return {
                            "index": candidate.index,
                            "reason": f"{event['envelope']['event_type']}: {refused}",
                        }
                return None
            except SegmentError as exc:
                reason = str(exc)
            except Exception as exc:
                # Schemas are registered at startup and the ingestor never flushes by itself here,
                # so this is no I/O failure but a bug: the DLQ keeps the message for a replay.
                logger.exception("processing message %s of %s failed", candidate.index, job.location)
                reason = f"could not be processed ({type(exc).__name__}: {exc}); this is a Patron bug, please report it"
        ingestor.reject(candidate.raw, location, reason, {"index": candidate.index})
        return {"index": candidate.index, "reason": reason}


class Unauthorized(Exception):
    """No valid write key: answered 401 and never stored (unauthenticated input has no source)."""


class Collector:
    """The running collector's parts: the log, the key store and the writer thread."""

    def __init__(self, settings: Settings, external_id_traits: Iterable[str] = ()):
        self.settings = settings
        self.log = open_log(settings)
        for topic in (EVENTS_TOPIC, DEAD_LETTER_TOPIC):
            self.log.ensure_topic(topic)
        self.keys = WriteKeyStore(settings.path("write_keys.db"))
        codec = open_codec(settings)
        for event_type in codec.catalogue.event_types():
            codec.schema_id(event_type)  # registry I/O now, so that requests never wait on (or fail by) it
        self.writer = GroupCommitWriter(self.log, codec, external_id_traits)

    def close(self) -> None:
        self.writer.stop()
        self.log.close()

    async def handle(self, request: Request, call: str) -> Response:
        received_at = datetime.now(UTC)
        try:
            source, key = await self._header_source(request)
            job = await self._job(request, call, source, key, received_at)
        except Unauthorized as exc:
            return _failure(
                401, "unauthorized", str(exc), headers={"WWW-Authenticate": 'Basic realm="patron"'}
            )
        try:
            future = self.writer.submit(job)
        except queue.Full:
            return _failure(
                503, "overloaded", "the collector is busy; retry shortly", headers={"Retry-After": "1"}
            )
        try:
            rejections = await asyncio.wrap_future(future)
        except Exception as exc:
            return _failure(503, "unavailable", f"events were not stored, retry: {exc}")
        if not rejections:
            return JSONResponse({"success": True})
        first = rejections[0]
        message = first["reason"]
        if first["index"] is not None:
            message = f"{len(rejections)} of {len(job.candidates)} message(s) rejected; #{first['index']}: {message}"
        return _failure(400, "invalid_request", message, errors=rejections)

    async def _header_source(self, request: Request) -> tuple[str | None, str | None]:
        """The source and key named by an ``Authorization: Basic`` header, if there is one."""
        header = request.headers.get("authorization")
        if header is None:
            return None, None
        scheme, _, encoded = header.partition(" ")
        try:
            username = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            username = ""
        if scheme.lower() != "basic" or not username:
            raise Unauthorized("Authorization must be HTTP Basic with the write key as username")
        return await self._source_of(username), username

    async def _source_of(self, key: str) -> str:
        source = await run_in_threadpool(self.keys.source_for, key)
        if source is None:
            raise Unauthorized("unknown or revoked write key; `patron keys list` shows the valid ones")
        return source

    async def _job(
        self, request: Request, call: str, source: str | None, key: str | None, received_at: datetime
    ) -> Job:
        """Read and parse the body into a job; a body that is no request at all becomes one rejection."""
        location = request.url.path
        raw, problem = await _read_body(request, BATCH_LIMIT if call == "batch" else MESSAGE_LIMIT)
        body: Any = None
        if problem is None:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problem = f"request body is not valid JSON ({exc})"
        if problem is None and not isinstance(body, dict):
            problem = "request body must be a JSON object"
        if source is None:
            body_key = body.get("writeKey") if isinstance(body, dict) else None
            if not isinstance(body_key, str) or not body_key:
                hint = f" (the body could not be read for a writeKey: {problem})" if problem else ""
                raise Unauthorized(f"no write key: send it as the HTTP Basic username or as writeKey{hint}")
            source, key = await self._source_of(body_key), body_key
        elif isinstance(body, dict) and body.get("writeKey") not in (None, key):
            raise Unauthorized("the body's writeKey differs from the Authorization key")
        if problem is None:
            candidates, problem = _candidates(body, raw, call, key)
        if problem is not None:
            candidates = [Candidate(None, raw, error=problem)]
        sent_at = body.get("sentAt") if call == "batch" and isinstance(body, dict) else None
        return Job(source, location, candidates, received_at, sent_at)

    async def health(self, request: Request) -> Response:
        status = 200 if self.writer.alive else 503
        body = {"status": "ok" if status == 200 else "writer stopped", "backend": str(self.settings.broker)}
        return JSONResponse(body, status_code=status)


async def _read_body(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The decompressed body, or what was read of it and why it cannot be used.

    Reading stops past the limit, and decompression is bounded too, so neither a huge body
    nor a gzip bomb can exhaust memory; the part read is what the dead letter keeps.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    compressed = encoding != "identity"
    cap = limit + GZIP_SLACK if compressed else limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[
                :cap
            ], f"request body is over the {limit // 1024} KB limit; {_split_hint(limit)}"
    raw = b"".join(chunks)
    if encoding not in ("identity", "gzip", "x-gzip"):  # read anyway: the dead letter keeps the bytes
        return raw, f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding"
    if not raw:
        return raw, "request body is empty"
    if not compressed:
        return raw, None
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        return raw, f"request body is not valid gzip ({exc})"
    if len(body) > limit:
        return (
            raw,
            f"request body is over the {limit // 1024} KB limit once decompressed; {_split_hint(limit)}",
        )
    if not inflater.eof:
        return raw, "request body is truncated gzip (the compressed stream does not end)"
    return body, None


def _split_hint(limit: int) -> str:
    return (
        "send fewer messages per batch" if limit == BATCH_LIMIT else "send smaller messages, or use /v1/batch"
    )


def _candidates(
    body: dict[str, Any], raw: bytes, call: str, key: str | None
) -> tuple[list[Candidate], str | None]:
    """The request's messages; or the reason the body as a whole is not a request of ``call``."""
    if call != "batch":
        kind = body.setdefault("type", call)
        if kind != call:
            return [], f"type: a {kind!r} message was sent to /v1/{call}; send it to /v1/{kind} or /v1/batch"
        try:
            orjson.dumps(body)  # what the writer does with it (event id, free-form maps) must not fail there
        except orjson.JSONEncodeError:
            return [], TOO_DEEP
        return [Candidate(0, raw, body)], None
    unknown = sorted(set(body) - BATCH_FIELDS)
    if unknown:
        return (
            [],
            f"{unknown[0]}: unknown field in a batch request (expected batch, sentAt, context, writeKey)",
        )
    messages = body.get("batch")
    if not isinstance(messages, list):
        return [], "batch: expected an array of messages"
    shared = body.get("context") or {}
    if not isinstance(shared, dict):
        return [], "context: the batch-level context must be a JSON object"
    return [_candidate(i, message, shared, key, raw) for i, message in enumerate(messages)], None


def _candidate(index: int, message: Any, shared: dict[str, Any], key: str | None, body: bytes) -> Candidate:
    """One batch message, with the batch-level context under its own; size and key checked."""
    try:
        raw = orjson.dumps(message)
    except orjson.JSONEncodeError:  # its own bytes cannot be rebuilt, so the letter keeps the whole body
        return Candidate(index, body, error=TOO_DEEP)
    if len(raw) > MESSAGE_LIMIT:
        return Candidate(
            index, raw, error=f"message is {len(raw)} bytes, over Segment's 32 KB limit per message"
        )
    if isinstance(message, dict):
        if message.get("writeKey") not in (None, key):
            return Candidate(index, raw, error="writeKey differs from the request's write key")
        context = message.get("context")
        if shared and (context is None or isinstance(context, dict)):
            message = {**message, "context": {**shared, **(context or {})}}
    return Candidate(index, raw, message)


def _failure(
    status: int,
    code: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Segment-style error body: the SDKs log ``code`` and ``message``; ``errors`` lists each rejection."""
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    body["errors"] = errors if errors is not None else [{"index": None, "reason": message}]
    return JSONResponse(body, status_code=status, headers=headers)


async def _openapi(request: Request) -> Response:
    text = (files("patron.connectors") / "openapi.yaml").read_text(encoding="utf-8")
    return Response(text, media_type="application/yaml")


def create_app(settings: Settings, external_id_traits: Iterable[str] = ()) -> Starlette:
    """The ASGI app; the log, registry and writer open at startup and close at shutdown."""
    state: dict[str, Collector] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        collector = state["collector"] = await run_in_threadpool(Collector, settings, external_id_traits)
        collector.writer.start()
        try:
            yield
        finally:
            await run_in_threadpool(collector.close)

    def endpoint(call: str) -> Any:
        async def handle(request: Request) -> Response:
            return await state["collector"].handle(request, call)

        return handle

    async def health(request: Request) -> Response:
        return await state["collector"].health(request)

    routes = [Route(f"/v1/{call}", endpoint(call), methods=["POST"]) for call in SINGLE_CALLS]
    routes += [Route(path, endpoint("batch"), methods=["POST"]) for path in ("/v1/batch", "/v1/import")]
    routes += [Route("/health", health), Route("/openapi.yaml", _openapi)]
    # Browser SDKs (analytics.js) post from the shop's own origin; the write key is public there
    # anyway, so like Segment's API the collector answers every origin, without cookies.
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
        max_age=86400,
    )
    return Starlette(routes=routes, lifespan=lifespan, middleware=[cors])


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (and ``patron serve --workers N``): settings from ``PATRON_*``."""
    traits = [name.strip() for name in os.environ.get(EXTERNAL_ID_TRAITS_ENV, "").split(",") if name.strip()]
    return create_app(Settings.load(), traits)
