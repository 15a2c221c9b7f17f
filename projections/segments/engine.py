"""Segment membership and trigger firing for one profile: compare what holds now with what held before.

Called by the profiles stage after it folds a record into a profile (``ProfileProcessor``), with
that profile's ``segments`` state (see ``docs/segments.md``)::

    {"now": micros,                                   # the last evaluation moment (never goes back)
     "in": {segment: {"v": version, "since": micros}},     # open memberships
     "holds": {trigger: micros},                      # triggers whose condition holds (fired on entry)
     "n": {name: transitions},                        # ordinals: deterministic event ids
     "history": [[segment, version, entered, exited], ...],  # closed memberships
     "fired": {"trigger/channel": [micros, ...]},     # deliveries inside the cap window
     "defs": fingerprint}                             # the definitions last evaluated with

Pure: the evaluation moment comes from the record (its ``received_at``, or a timer's ``due_at``),
never from the clock, and every event id is derived from (profile, name, ordinal). Re-processing
the same records therefore emits byte-identical events that the log recognises as duplicates:
exactly one event per transition, whatever crashes and replays happen.

Consent: an entry or a trigger goes to each of its definition's channels only if the profile's
consent for (purpose, channel) is granted; the others are listed in ``suppressed`` with the reason.
An exit goes to every channel: telling a tool to drop someone never needs consent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from patron.identity.events import uuid5_text
from patron.projections.profiles import Profile
from patron.projections.segments.definitions import Definition, Definitions
from patron.projections.segments.fields import SCORES, TIME, Fields, field_spec
from patron.projections.segments.predicates import (
    TIME_OPS,
    duration_text,
    evaluate,
    holds,
    leaves,
    next_flip,
    shown,
)
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC, SEGMENTS_SOURCE, TRIGGERS_TOPIC
from patron.streams.processor import Emit
from patron.streams.topology import derived_event

SEGMENT_ENTERED, SEGMENT_EXITED, TRIGGER_FIRED = "segment_entered", "segment_exited", "trigger_fired"
TRANSITION_NAMESPACE = uuid.UUID("2b6f0e4a-93c1-5d7e-a8f2-61c4d0b9e357")
State = dict[str, Any]
SCORES_INPUT, PROFILE_INPUT, TIME_INPUT, ALL_INPUTS = "scores", "profile", "time", "all"


def new_state() -> State:
    return {"now": 0, "in": {}, "holds": {}, "n": {}, "history": [], "fired": {}, "defs": ""}


def transition_id(kind: str, profile_id: str, name: str, ordinal: int) -> str:
    """The id of a profile's ``ordinal``-th transition of ``kind`` for ``name``: the same on every replay."""
    return uuid5_text(TRANSITION_NAMESPACE, f"{kind}:{profile_id}:{name}:{ordinal}")


def moment(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def _json(name: str, value: Any) -> str:
    spec = field_spec(name)
    if spec is not None and spec.kind == TIME and isinstance(value, int):
        value = shown(value, TIME)
    return orjson.dumps(value).decode()


def _inputs(definition: Definition) -> frozenset[str]:
    """What can change the definition's result: ``scores`` (a snapshot), ``profile`` (the profile's own
    records: events, merges, splits) and ``time`` (windows that flip as the clock moves)."""
    inputs = set()
    for leaf in leaves(definition.condition):
        spec = field_spec(leaf.field)
        inputs.add(SCORES_INPUT if leaf.field in SCORES or leaf.field == "scores.as_of" else PROFILE_INPUT)
        if leaf.op in TIME_OPS or (spec is not None and spec.changes_with_time):
            inputs.add(TIME_INPUT)
    return frozenset(inputs)


class SegmentEngine:
    """Evaluates ``definitions`` for one profile at a time; see the module docstring.

    Dependency tracking: a record only re-evaluates the definitions whose result it can change. A
    snapshot's scores do not touch conditions over events and traits, a source event does not touch
    conditions over scores; conditions with a time window are evaluated every time (the moment moved).
    """

    def __init__(self, definitions: Definitions):
        self.definitions = definitions
        self._inputs = {d.name: _inputs(d) for d in (*definitions.segments, *definitions.triggers)}

    def _affected(self, definition: Definition, changed: str) -> bool:
        inputs = self._inputs[definition.name]
        return changed == ALL_INPUTS or changed in inputs or TIME_INPUT in inputs

    def evaluate(
        self,
        state: State | None,
        profile_id: str,
        profile: Profile,
        at: int,
        cause_id: str,
        changed: str = ALL_INPUTS,
    ) -> tuple[State, int | None, list[Emit]]:
        """The profile's new segments state, its next wake-up moment (or None), and the events to emit.

        ``changed`` says what the record changed (``scores``, ``profile``, or ``all``: evaluate every
        definition); with other definitions than the state was last evaluated with, all are evaluated.
        """
        state = state or new_state()
        if state["defs"] != self.definitions.fingerprint:
            changed = ALL_INPUTS
        now = max(state["now"], at)
        state["now"] = now
        fields = Fields(profile, now)
        emits: list[Emit] = []
        defined = {d.name for d in self.definitions.segments}
        for name in sorted(set(state["in"]) - defined):
            emits.append(
                self._exit(
                    state, profile_id, name, state["in"][name]["v"], "segment removed", (), now, cause_id
                )
            )
        for definition in self.definitions.segments:
            if not self._affected(definition, changed):
                continue
            held = holds(definition.condition, fields)
            member = state["in"].get(definition.name)
            if held and member is None:
                reasons = evaluate(definition.condition, fields)[1]
                emits.append(self._enter(state, profile_id, definition, reasons, fields, cause_id))
            elif not held and member is not None:
                reason = " and ".join(evaluate(definition.condition, fields)[1])
                emits.append(
                    self._exit(
                        state,
                        profile_id,
                        definition.name,
                        definition.version,
                        reason,
                        definition.channels,
                        now,
                        cause_id,
                        fields,
                        definition.include,
                    )
                )
            elif held and member is not None:
                member["v"] = definition.version
        triggers = {d.name for d in self.definitions.triggers}
        for name in set(state["holds"]) - triggers:
            del state["holds"][name]
        for definition in self.definitions.triggers:
            if not self._affected(definition, changed):
                continue
            held = holds(definition.condition, fields)
            if held and definition.name not in state["holds"]:
                state["holds"][definition.name] = now
                reasons = evaluate(definition.condition, fields)[1]
                emits.append(self._fire(state, profile_id, definition, reasons, fields, cause_id))
            elif not held:
                state["holds"].pop(definition.name, None)
        state["defs"] = self.definitions.fingerprint
        flips = [
            flip
            for definition in (*self.definitions.segments, *self.definitions.triggers)
            if TIME_INPUT in self._inputs[definition.name]
            and (flip := next_flip(definition.condition, fields)) is not None
        ]
        return state, (min(flips) if flips else None), emits

    def merged_away(
        self, state: State | None, profile_id: str, survivor: str, at: int, cause_id: str
    ) -> list[Emit]:
        """Exit every segment of a profile that was merged into ``survivor`` (the survivor is evaluated
        when the hand-over reaches it). Mutates ``state``."""
        return self.leave_all(state, profile_id, f"merged into {survivor}", at, cause_id)

    def leave_all(
        self, state: State | None, profile_id: str, reason: str, at: int, cause_id: str
    ) -> list[Emit]:
        """Exit every segment ``profile_id`` is in, for ``reason`` (merged away, erased). Mutates ``state``."""
        if not state:
            return []
        now = max(state["now"], at)
        state["now"] = now
        state["holds"].clear()
        emits = []
        for name in sorted(state["in"]):
            definition = self.definitions.find(name)
            channels = definition.channels if definition else ()
            emits.append(
                self._exit(state, profile_id, name, state["in"][name]["v"], reason, channels, now, cause_id)
            )
        return emits

    # -- events ------------------------------------------------------------------------------
    def _next(self, state: State, name: str) -> int:
        state["n"][name] = state["n"].get(name, 0) + 1
        return state["n"][name]

    def _payload(
        self,
        profile_id: str,
        definition: Definition | None,
        reason: str,
        fields: Fields | None,
        include: tuple[str, ...],
        now: int,
        cause_id: str,
    ) -> dict[str, Any]:
        traits = {name: _json(name, fields.value(name)) for name in include} if fields else {}
        return {
            "profile_id": profile_id,
            "version": definition.version if definition else 0,
            "reason": reason,
            "traits": traits,
            "channels": [],
            "suppressed": [],
            "evaluated_at": moment(now),
            "cause_event_id": cause_id,
        }

    def _event(
        self, kind: str, topic: str, profile_id: str, name: str, ordinal: int, payload: dict[str, Any]
    ) -> Emit:
        at = payload["evaluated_at"]
        event = derived_event(
            transition_id(kind, profile_id, name, ordinal),
            kind,
            source=SEGMENTS_SOURCE,
            occurred_at=at,
            received_at=at,
            payload=payload,
        )
        return Emit(topic, event, key=profile_id)

    def _started(
        self, profile_id: str, definition: Definition, reasons: list[str], fields: Fields, cause_id: str
    ) -> dict[str, Any]:
        """The payload of an entry or a firing: why, the included fields, the consented channels."""
        payload = self._payload(
            profile_id, definition, " and ".join(reasons), fields, definition.include, fields.now, cause_id
        )
        payload["channels"], payload["suppressed"] = self._consented(definition, fields)
        return payload

    def _enter(
        self,
        state: State,
        profile_id: str,
        definition: Definition,
        reasons: list[str],
        fields: Fields,
        cause_id: str,
    ) -> Emit:
        state["in"][definition.name] = {"v": definition.version, "since": fields.now}
        payload = self._started(profile_id, definition, reasons, fields, cause_id)
        payload["segment"] = definition.name
        ordinal = self._next(state, definition.name)
        return self._event(
            SEGMENT_ENTERED, SEGMENT_CHANGES_TOPIC, profile_id, definition.name, ordinal, payload
        )

    def _exit(
        self,
        state: State,
        profile_id: str,
        name: str,
        version: int,
        reason: str,
        channels: tuple[str, ...],
        now: int,
        cause_id: str,
        fields: Fields | None = None,
        include: tuple[str, ...] = (),
    ) -> Emit:
        member = state["in"].pop(name)
        state["history"].append([name, member["v"], member["since"], now])
        payload = self._payload(
            profile_id, self.definitions.find(name), reason, fields, include, now, cause_id
        )
        payload["version"] = version
        payload["segment"] = name
        payload["channels"] = list(channels)
        ordinal = self._next(state, name)
        return self._event(SEGMENT_EXITED, SEGMENT_CHANGES_TOPIC, profile_id, name, ordinal, payload)

    def _fire(
        self,
        state: State,
        profile_id: str,
        definition: Definition,
        reasons: list[str],
        fields: Fields,
        cause_id: str,
    ) -> Emit:
        now = fields.now
        payload = self._started(profile_id, definition, reasons, fields, cause_id)
        payload["trigger"] = definition.name
        payload["action"] = definition.action
        channels, suppressed = payload["channels"], payload["suppressed"]
        allowed = []
        for channel in channels:
            key = f"{definition.name}/{channel}"
            recent = [t for t in state["fired"].get(key, []) if t > now - definition.cap_per]
            if len(recent) >= definition.cap_max:
                cap = f"{definition.cap_max} per {duration_text(definition.cap_per)}"
                suppressed.append(
                    {"channel": channel, "reason": f"frequency cap {cap} reached for {channel}"}
                )
            else:
                recent.append(now)
                allowed.append(channel)
            state["fired"][key] = recent
        payload["channels"], payload["suppressed"] = allowed, suppressed
        ordinal = self._next(state, definition.name)
        return self._event(TRIGGER_FIRED, TRIGGERS_TOPIC, profile_id, definition.name, ordinal, payload)

    @staticmethod
    def _consented(definition: Definition, fields: Fields) -> tuple[list[str], list[dict[str, str]]]:
        """The definition's channels the profile consented to, and the others with the reason."""
        if definition.purpose is None:
            return list(definition.channels), []
        allowed, suppressed = [], []
        for channel in definition.channels:
            entry = fields.consent_entry(definition.purpose, channel)
            if entry is None:
                reason = f"no {definition.purpose} consent for {channel} on record"
            elif not entry["granted"]:
                how = f" ({entry['method']})" if entry.get("method") else ""
                reason = (
                    f"{definition.purpose} consent for {channel} withdrawn on {shown(entry['at'], TIME)}{how}"
                )
            else:
                allowed.append(channel)
                continue
            suppressed.append({"channel": channel, "reason": reason})
        return allowed, suppressed
