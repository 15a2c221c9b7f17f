"""GDPR erasure (art. 17) on the embedded backend: crypto-shred a person, rebuild, purge the copies.

The log is immutable and is the truth, so a person is not deleted from it; their data is made
unreadable and everything derived from it is rebuilt:

1. the ``erasure_requested`` event is appended, its identifiers encrypted under the person's key;
   and, keyed by each of their profile ids, on ``patron.profile-events``: the profiles stage then
   drops the profile, its wake-up and its segment memberships (``segment_exited``, reason "erased");
2. the person's data keys are deleted (one per identifier they were ever routed by, one per profile
   id): every personal field of theirs in every topic of the log, the request's own identifiers
   included, is now unreadable -- it decodes as erased;
3. the processors' state is rebuilt from the log (``LocalRunner.reset`` + ``run``), as any projection
   can be: the person's events no longer carry identifiers, so no profile collects them again;
4. what is stored in clear outside the log's events is purged: dead letters whose raw payload or
   reason names one of their identifiers, and their rows in every retained snapshot;
5. the database is compacted (``VACUUM``), so deleted state does not linger in free pages or the WAL;
6. an audit line without personal data is appended to ``DATA/erasures.jsonl``.

Needs exclusive use of the data directory (no ``patron run --follow`` at the same time).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from patron.config import Settings
from patron.connectors.deadletter import DeadLetter, decode_entry
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import EventCodec, open_codec
from patron.events.models import validate_event
from patron.events.pii_crypto import profile_subject, subject_ids
from patron.projections.profile_reader import ProfileReader
from patron.projections.snapshot import read_manifest, snapshots_root
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner, ProcessorStats
from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC, Message, scan
from patron.streams.topology import ERASURE_SOURCE, PROFILE_EVENTS_TOPIC, default_processors

AUDIT_FILE = "erasures.jsonl"
BASE_KINDS = ("user_id", "anonymous_id", "email", "phone", "device_id")


@dataclass(frozen=True)
class Erasure:
    """What an erasure did; the audit record (no personal data: counts and ids Patron made up)."""

    request_id: str
    at: str
    requested_by: str
    reason: str | None
    profiles: int
    identifiers: int
    keys_deleted: int
    dead_letters_purged: int
    snapshots_rewritten: int
    snapshot_rows_removed: int
    events_replayed: int


def erase(
    settings: Settings,
    identifier: str,
    *,
    kind: str | None = None,
    region: str | None = None,
    reason: str | None = None,
    requested_by: str = "dpo",
    on_batch: Callable[[str, ProcessorStats], None] | None = None,
) -> Erasure:
    """Erase whoever ``identifier`` names (see the module docstring); returns the audit record."""
    if settings.broker.scheme != "local":
        raise PatronError(
            "patron erase works on the embedded log; on Kafka, see docs/guarantees.md#erasure", EXIT_INVALID
        )
    if not settings.encrypt_pii:
        raise PatronError(
            "PII encryption is off (PATRON_PII_ENCRYPTION=off): the log holds personal data in clear and "
            "cannot be erased by deleting keys",
            EXIT_INVALID,
        )
    log = LocalLog(settings.broker.location, default_partitions=settings.partitions)
    codec = open_codec(settings)
    try:
        reader = ProfileReader(log, codec)
        live, state = reader.profile(reader.lookup(identifier, kind, region))
        identifiers = sorted((k, v) for k, values in state["ids"].items() for v in values)
        profile_ids = sorted({live, *state.get("keys", ())})
        runner = LocalRunner(log, codec, default_processors(settings))
        runner.reset()  # first: it refuses while another runner holds the log, before anything changed
        request_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        request = _request(request_id, now, identifiers, requested_by, reason)
        log.append(EVENTS_TOPIC, [codec.message(request)])
        # one record per profile id on the profiles stage's input, keyed by it: the stage forgets it
        log.append(PROFILE_EVENTS_TOPIC, [_for_profile(codec, request, pid) for pid in profile_ids])
        subjects = {subject_ids(k, v) for k, v in identifiers} | {profile_subject(p) for p in profile_ids}
        assert codec.cipher is not None
        deleted = codec.cipher.keys.delete(subjects)
        stats = runner.run(on_batch=on_batch)
        purged = purge_dead_letters(log, [v for _, v in identifiers])
        rewritten, removed = purge_snapshots(snapshots_root(settings), profile_ids)
        log.compact()
    finally:
        log.close()
    record = Erasure(
        request_id=request_id,
        at=now.isoformat(),
        requested_by=requested_by,
        reason=reason,
        profiles=len(profile_ids),
        identifiers=len(identifiers),
        keys_deleted=deleted,
        dead_letters_purged=purged,
        snapshots_rewritten=rewritten,
        snapshot_rows_removed=removed,
        events_replayed=stats["identity"].processed if "identity" in stats else 0,
    )
    with (settings.data_dir / AUDIT_FILE).open("ab") as audit:
        audit.write(orjson.dumps(asdict(record)) + b"\n")
    return record


def _request(
    request_id: str, at: datetime, identifiers: list[tuple[str, str]], requested_by: str, reason: str | None
) -> dict:
    """The ``erasure_requested`` event, naming the person by their identifiers (encrypted on write,
    under keys deleted right after: the request itself keeps no personal data)."""
    named: dict = {"external_ids": {}}
    for kind, value in identifiers:
        if kind in BASE_KINDS:
            named.setdefault(kind, value)
        else:
            named["external_ids"].setdefault(kind.removeprefix("external:"), value)
    return validate_event(
        {
            "envelope": {
                "event_id": request_id,
                "event_type": "erasure_requested",
                "occurred_at": at,
                "received_at": at,
                "source": ERASURE_SOURCE,
                "identifiers": named,
                "context": {},
            },
            "payload": {"request_id": request_id, "requested_by": requested_by, "reason": reason},
        }
    )


def _for_profile(codec: EventCodec, request: dict, profile_id: str) -> Message:
    """The request as the profiles stage's record for ``profile_id`` (an id of its own per profile)."""
    event_id = str(uuid.uuid5(uuid.UUID(request["envelope"]["event_id"]), profile_id))
    return codec.message(
        {**request, "envelope": {**request["envelope"], "event_id": event_id}}, key=profile_id.encode()
    )


def purge_dead_letters(log: LocalLog, values: Iterable[str]) -> int:
    """Delete the dead letters whose raw payload, reason, location or details name any of ``values``
    (case-insensitively)."""
    needles = [value.lower() for value in values if len(value) >= 3]
    doomed = []
    for record in scan(log, DEAD_LETTER_TOPIC):
        letter = decode_entry(record.value)
        if not isinstance(letter, DeadLetter):
            continue
        text = " ".join(
            (
                letter.raw.decode("utf-8", "replace"),
                letter.reason,
                letter.location,
                orjson.dumps(letter.details).decode(),
            )
        ).lower()
        if any(needle in text for needle in needles):
            doomed.append((record.partition, record.offset))
    return log.delete_records(DEAD_LETTER_TOPIC, doomed)


def purge_snapshots(root: Path, profile_ids: list[str]) -> tuple[int, int]:
    """Rewrite every retained snapshot's tables without the rows of ``profile_ids``; returns
    (snapshots rewritten, rows removed)."""
    rewritten = removed = 0
    con = duckdb.connect(":memory:")
    try:
        con.execute("CREATE TABLE erased (profile_id VARCHAR)")
        con.executemany("INSERT INTO erased VALUES (?)", [(p,) for p in profile_ids])
        for snapshot_id in read_manifest(root)["snapshots"]:
            directory = root / snapshot_id
            touched = 0
            for parquet in sorted(directory.rglob("*.parquet")):
                source = "'" + str(parquet).replace("'", "''") + "'"
                columns = {
                    row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet({source})").fetchall()
                }
                if "profile_id" not in columns:
                    continue
                hit = con.execute(
                    f"SELECT count(*) FROM read_parquet({source}) WHERE profile_id IN (SELECT profile_id FROM erased)"
                ).fetchone()[0]
                if not hit:
                    continue
                aside = parquet.with_name(f".{parquet.name}.erasing")
                con.execute(
                    f"COPY (SELECT * FROM read_parquet({source}) WHERE profile_id IS NULL OR profile_id NOT IN "
                    f"(SELECT profile_id FROM erased)) TO '{aside}' (FORMAT parquet, COMPRESSION zstd)"
                )
                aside.replace(parquet)
                removed += hit
                touched += 1
            rewritten += bool(touched)
    finally:
        con.close()
    return rewritten, removed
