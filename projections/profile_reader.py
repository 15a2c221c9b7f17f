"""Reading committed profiles back from the embedded log: lookup by any identifier, timeline, audit.

The runner commits the identity graph and the profiles in the log's ``state`` table (stores
``identity.identifiers`` and ``profiles.profiles``); this module only reads them, so it works while
``patron run --follow`` is writing (SQLite WAL readers see the last commit).

Identifiers are normalised the way ingestion normalises them (email trimmed and lower-cased, phone
E.164 with a default region), so ``" Jo@Example.COM"`` and ``"030 1234567"`` find what the sources sent.
"""

from __future__ import annotations

import contextlib
import difflib
import heapq
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from patron.errors import PatronError
from patron.events.codec import EventCodec
from patron.events.normalize import normalize_email, normalize_phone
from patron.identity.resolver import micros
from patron.identity.rules import BASE_KINDS, EXTERNAL, IdentityRules, default_rules
from patron.projections.profile_processor import ProfileProcessor
from patron.projections.profiles import Profile, anchor_of
from patron.streams.local_log import LocalLog
from patron.streams.log import Record, partition_for
from patron.streams.state import SqliteStore, store_name
from patron.streams.topology import IDENTITY_SOURCE, IDENTITY_TOPIC, PROFILE_EVENTS_TOPIC, PROFILES_SOURCE

PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{5,}$")
UUID_LIKE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
READ_BATCH = 5000
Progress = Callable[[int], None]
"""Called with the number of records just scanned (drives a progress bar)."""


def kind_of(option: str) -> str:
    """``--kind`` as an identifier kind: base kinds as they are, any other name as ``external:<name>``."""
    if option in BASE_KINDS or option.startswith(EXTERNAL):
        return option
    close = difflib.get_close_matches(option, BASE_KINDS, n=1, cutoff=0.8)
    if close:  # "emial" is a typo, not an external id name
        raise PatronError(f"--kind {option!r}: did you mean {close[0]!r}? (other names are external ids)")
    return EXTERNAL + option


def normalised(kind: str, text: str, region: str | None) -> str:
    """The identifier value as ingestion stores it; a malformed email or phone is an input error."""
    try:
        if kind == "email":
            return normalize_email(text)
        if kind == "phone":
            return normalize_phone(text, region)
    except ValueError as exc:
        raise PatronError(f"--kind {kind}: {exc}") from None
    return text.strip()


class ProfileReader:
    """Profiles, identity graph and profile timelines of one embedded log (read only)."""

    def __init__(self, log: LocalLog, codec: EventCodec, identity_rules: IdentityRules | None = None):
        self.log = log
        self.codec = codec
        self.identity_plan = (identity_rules or default_rules()).plan
        self.index = SqliteStore(log, store_name("identity", "identifiers"), cache_size=0)
        self.identity_profiles = SqliteStore(log, store_name("identity", "profiles"), cache_size=0)
        self.profiles = SqliteStore(log, store_name(ProfileProcessor.name, "profiles"), cache_size=0)

    # -- lookup ------------------------------------------------------------------------------
    def lookup(self, text: str, kind: str | None = None, region: str | None = None) -> str:
        """The profile holding identifier ``text`` (of ``kind``, or of whichever kind matches)."""
        if kind is not None:
            kind = kind_of(kind)
            value = normalised(kind, text, region)
            found = self.index.get(f"{kind}:{value}")
            if found is None:
                raise PatronError(
                    f"no profile holds {kind} {value!r}; check the value, or run `patron run` "
                    "if its events were ingested since"
                )
            return str(found)
        if UUID_LIKE.match(text.strip()) and self.profiles.get(text.strip()) is not None:
            return text.strip()
        matches = self._matches(text.strip(), region)
        profiles = sorted(set(matches.values()))
        if not profiles:
            raise PatronError(
                f"no profile holds {text!r} as user_id, anonymous_id, email, phone, device_id or an external id; "
                "pass --kind if it is another kind, or run `patron run` if its events were ingested since"
            )
        if len(profiles) > 1:
            kinds = ", ".join(f"{kind} ({profile})" for kind, profile in sorted(matches.items()))
            raise PatronError(f"{text!r} names more than one profile: {kinds}; pass --kind to choose")
        return profiles[0]

    def _matches(self, text: str, region: str | None) -> dict[str, str]:
        """Kind -> profile for every kind under which ``text`` is a known identifier."""
        tries = {kind: text for kind in ("user_id", "anonymous_id", "device_id")}
        if "@" in text:
            tries["email"] = text.lower()
        if PHONE_LIKE.match(text):
            with contextlib.suppress(ValueError):
                tries["phone"] = normalize_phone(text, region)
        matches = {kind: self.index.get(f"{kind}:{value}") for kind, value in tries.items()}
        found = {kind: str(profile) for kind, profile in matches.items() if profile is not None}
        if not found:
            found = self._external_matches(text)
        return found

    def _external_matches(self, text: str) -> dict[str, str]:
        """External-id kinds holding ``text`` (a range scan over external identifiers only)."""
        rows = self.log.db.execute(
            "SELECT key, value FROM state WHERE store = ? AND key >= ? AND key < ?",
            (self.index.name, EXTERNAL.encode(), b"external;"),
        )
        found = {}
        for key, value in rows:
            _, name, held = bytes(key).decode().split(":", 2)
            if held == text:
                found[EXTERNAL + name] = orjson.loads(value)
        return found

    # -- profiles ----------------------------------------------------------------------------
    def profile(self, profile_id: str) -> tuple[str, Profile]:
        """The live profile ``profile_id`` is (following merges), with its state."""
        seen = [profile_id]
        state = self.profiles.get(profile_id)
        while state is not None and "merged_into" in state and len(seen) < 1000:
            seen.append(state["merged_into"])
            state = self.profiles.get(seen[-1])
        if state is None or "merged_into" in state:
            raise PatronError(
                f"profile {profile_id} has no projection yet; run `patron run` to process the log"
            )
        return seen[-1], state

    # -- timeline ----------------------------------------------------------------------------
    def timeline(
        self,
        profile: Profile,
        limit: int,
        progress: Progress | None = None,
        types: frozenset[str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` source events of the profile (only ``types``, when given), newest first,
        and how many there are.

        Reads the partitions of ``patron.profile-events`` that hold the profile's records (its own id
        and the ids of profiles merged into it or split from); an event belongs to the profile when
        its anchor is one of the profile's parts, the same rule the projection folds by.
        """
        keys = {key.encode() for key in profile["keys"]}
        anchors = set(profile["parts"])
        partitions = self.log.topics().get(PROFILE_EVENTS_TOPIC, 0)
        wanted = sorted({partition_for(key, partitions) for key in keys}) if partitions else []
        newest: list[tuple[int, str, dict[str, Any]]] = []
        total = 0
        for partition in wanted:
            for record in self._records(PROFILE_EVENTS_TOPIC, partition, progress):
                if record.key not in keys:
                    continue
                event = self.codec.decode(record.value)
                envelope = event["envelope"]
                if envelope["source"] in (IDENTITY_SOURCE, PROFILES_SOURCE):
                    continue
                if types is not None and envelope["event_type"] not in types:
                    continue
                if anchor_of(envelope["identifiers"], self.identity_plan) not in anchors:
                    continue
                total += 1
                item = (micros(envelope["occurred_at"]), envelope["event_id"], event)
                if len(newest) < limit:
                    heapq.heappush(newest, item)
                elif limit:
                    heapq.heappushpop(newest, item)
        return [event for _, _, event in sorted(newest, reverse=True)], total

    # -- identity audit ----------------------------------------------------------------------
    def identity_events(
        self, profile_ids: set[str], progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """Every identity event naming one of ``profile_ids`` (links, merges, refusals, splits), oldest first."""
        needles = [profile_id.encode() for profile_id in profile_ids]
        found = []
        for partition in range(self.log.topics().get(IDENTITY_TOPIC, 0)):
            for record in self._records(IDENTITY_TOPIC, partition, progress):
                if not any(needle in record.value for needle in needles):
                    continue  # cheap pre-filter: the ids are plain text in the Avro body
                event = self.codec.decode(record.value)
                payload = event["payload"]
                named = {
                    payload.get(field) for field in ("profile_id", "merged_profile_id", "other_profile_id")
                }
                named.add(payload.get("new_profile_id"))
                if named & profile_ids:
                    found.append(event)
        found.sort(key=lambda event: (event["envelope"]["occurred_at"], event["envelope"]["event_id"]))
        return found

    def known(self, profile_id: str) -> bool:
        """Whether ``profile_id`` is a profile id the graph or the projection knows (live or merged)."""
        return self.identity_profiles.get(profile_id) is not None or self.profiles.get(profile_id) is not None

    def identity_profile(self, profile_id: str) -> dict[str, Any] | None:
        """The identity graph's entry of a live profile (None once merged away or never seen)."""
        return self.identity_profiles.get(profile_id)

    def holder(self, kind: str, value: str) -> str | None:
        """The profile the identity graph puts identifier ``kind:value`` in."""
        found = self.index.get(f"{kind}:{value}")
        return None if found is None else str(found)

    def _records(self, topic: str, partition: int, progress: Progress | None) -> Iterator[Record]:
        offset = 0
        end = self.log.end_offsets(topic).get(partition, 0)
        while offset < end:
            records = self.log.read(topic, partition, offset, READ_BATCH)
            if not records:
                return
            if progress is not None:
                progress(len(records))
            yield from records
            offset = records[-1].offset + 1
