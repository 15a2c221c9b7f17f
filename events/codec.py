"""Avro encoding in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Writing uses the catalogue's schema (registered once per process to learn its id);
reading resolves the writer's schema from the registry by id and projects it onto the
catalogue's current schema, so records written under older versions still decode.
"""

from __future__ import annotations

import io
import struct
import uuid
from datetime import datetime
from typing import Any

import fastavro

from patron.config import Settings
from patron.events.pii_crypto import PiiCipher
from patron.events.routing import routing_key
from patron.schemas.catalogue import Catalogue, default_catalogue
from patron.schemas.registry import SchemaRegistry, schema_text
from patron.streams.log import Message

MAGIC = 0
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    """Bytes that are not a Confluent-framed Avro record Patron can read."""


class EventCodec:
    """Encodes and decodes event dicts (``{"envelope": ..., "payload": ...}``) for one registry."""

    def __init__(
        self, registry: SchemaRegistry, catalogue: Catalogue | None = None, cipher: PiiCipher | None = None
    ):
        self.registry = registry
        self.catalogue = catalogue or default_catalogue()
        self.cipher = cipher
        """Encrypts PII fields on encode and decrypts them on decode (``patron.events.pii_crypto``)."""
        self._ids: dict[str, int] = {}
        self._writers: dict[str, tuple[bytes, Any]] = {}
        self._readers: dict[int, tuple[Any, Any]] = {}
        self._names: dict[int, str] = {}

    def schema_id(self, event_type: str) -> int:
        """The registry id of the catalogue's schema for ``event_type`` (registered on first use)."""
        found = self._ids.get(event_type)
        if found is None:
            entry = self.catalogue.get(event_type)
            found = self._ids[event_type] = self.registry.register(entry.subject, entry.schema)
        return found

    def _writer(self, event_type: str) -> tuple[bytes, Any]:
        """The wire-format header and parsed schema of ``event_type``, looked up once per type."""
        found = self._writers.get(event_type)
        if found is None:
            parsed = self.catalogue.get(event_type).parsed
            found = self._writers[event_type] = (_HEADER.pack(MAGIC, self.schema_id(event_type)), parsed)
        return found

    def encode(self, event: dict[str, Any]) -> bytes:
        header, parsed = self._writer(event["envelope"]["event_type"])
        if self.cipher is not None:
            event = self.cipher.encrypt(event)
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, parsed, event)
        return out.getvalue()

    def message(
        self, event: dict[str, Any], *, key: bytes | None = None, value: bytes | None = None
    ) -> Message:
        """The log message for an event: routed by its identifiers (or by ``key``), deduplicated by
        its id. ``value``: the event's encoding when the caller already has it (a record passed on
        unchanged keeps its bytes: no re-encoding, and the same bytes as its source)."""
        envelope = event["envelope"]
        occurred: datetime = envelope["occurred_at"]
        event_id = str(envelope["event_id"])
        return Message(
            key=routing_key(envelope["identifiers"], event_id) if key is None else key,
            event_id=event_id,
            value=self.encode(event) if value is None else value,
            timestamp_ms=int(occurred.timestamp() * 1000),
        )

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < _HEADER.size:
            raise WireFormatError(
                f"record of {len(data)} bytes is shorter than the 5-byte wire-format header"
            )
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise WireFormatError(f"record starts with byte {magic}, not the wire-format magic byte 0")
        writer, reader = self._reader(schema_id)
        event = fastavro.schemaless_reader(io.BytesIO(data[_HEADER.size :]), writer, reader)
        envelope = event["envelope"]
        envelope["event_id"] = _canonical_uuid(envelope["event_id"])
        return event if self.cipher is None else self.cipher.decrypt(event)

    def event_type_of(self, data: bytes) -> str:
        """The event type of an encoded record, from its schema id alone (no body decode)."""
        _, schema_id = _HEADER.unpack_from(data)
        self._reader(schema_id)
        return self._names[schema_id]

    def _reader(self, schema_id: int) -> tuple[Any, Any]:
        found = self._readers.get(schema_id)
        if found is None:
            written = self.registry.schema(schema_id)
            writer = fastavro.parse_schema(_without_uuid_type(written))
            event_type = written.get("event_type", "")
            try:
                current = self.catalogue.get(event_type)
            except KeyError:
                current = None
            # Schema resolution costs about as much as the decode itself: only ask fastavro for it
            # when the record was written with another version than the catalogue's current one.
            same = current is None or schema_text(current.schema) == schema_text(written)
            reader = None if same else fastavro.parse_schema(_without_uuid_type(current.schema))
            found = self._readers[schema_id] = (writer, reader)
            self._names[schema_id] = event_type
        return found


def open_codec(settings: Settings) -> EventCodec:
    """The codec every Patron command uses: the configured registry, and PII encrypted under the data
    directory's key store unless ``PATRON_PII_ENCRYPTION=off``."""
    from patron.events.keystore import LocalKeyStore
    from patron.schemas.open import open_registry

    catalogue = default_catalogue()
    cipher = PiiCipher(LocalKeyStore(settings.data_dir), catalogue) if settings.encrypt_pii else None
    return EventCodec(open_registry(settings), catalogue, cipher)


def _without_uuid_type(schema: Any) -> Any:
    """``schema`` with the uuid logical type read as its plain string.

    fastavro turns a uuid into a ``uuid.UUID`` that :meth:`EventCodec.decode` would only turn back
    into text; reading the text and checking its form (:func:`_canonical_uuid`) costs a fraction.
    """
    if isinstance(schema, dict):
        if schema.get("logicalType") == "uuid" and schema.get("type") == "string":
            return "string"
        return {name: _without_uuid_type(value) for name, value in schema.items()}
    if isinstance(schema, list):
        return [_without_uuid_type(item) for item in schema]
    return schema


_UUID_DIGITS = frozenset("0123456789abcdef-")


def _canonical_uuid(text: str) -> str:
    """The canonical (lower-case, hyphenated) form of a uuid's text, as ``str(uuid.UUID(text))`` gives;
    the text itself when it already is (every id Patron writes), without building a ``uuid.UUID``."""
    if (
        len(text) == 36
        and text[8] == text[13] == text[18] == text[23] == "-"
        and text.count("-") == 4
        and _UUID_DIGITS.issuperset(text)
    ):
        return text
    return str(uuid.UUID(text))
