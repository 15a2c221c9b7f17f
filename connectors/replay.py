"""Replaying dead letters: re-submit their raw payloads through their connector once the cause is fixed.

Each letter goes back through the connector that filed it (found by name among the
installed connectors) and the shared ingest path. Event ids are deterministic, so a replay
that runs twice, or replays a letter whose event meanwhile arrived another way, adds
nothing twice. The outcome is appended to the dead-letter topic: a resolution naming the
events the letter became, or a failure with the new reason (the letter stays pending).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from patron.connectors.deadletter import DeadLetter, DeadLetterStore, ReplayFailure, Resolution
from patron.connectors.plugins import ConnectorError, ReplayingConnector, SourceConnector, load_connector
from patron.connectors.runner import RecordIngestor
from patron.events.codec import EventCodec
from patron.streams.log import EventLog

NO_EVENT = (
    "the record produces no event now (its `when:` column is empty), so there is nothing to resolve it with"
)


@dataclass
class ReplayOutcome:
    """What one letter's replay did: the events it became, or why it still fails."""

    letter: DeadLetter
    event_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return bool(self.event_ids) and not self.errors

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)


def replay_letters(
    letters: Sequence[DeadLetter],
    *,
    log: EventLog,
    codec: EventCodec,
    options: Mapping[str, str] | None = None,
    batch_size: int = 2000,
    load: Callable[[str], SourceConnector] = load_connector,
) -> list[ReplayOutcome]:
    """Replay ``letters`` and record each outcome on the dead-letter topic (after the events are stored)."""
    options = options or {}
    connectors: dict[str, SourceConnector | ConnectorError] = {}
    ingestors: dict[tuple[str, str, str | None, str | None], RecordIngestor] = {}
    outcomes: list[ReplayOutcome] = []
    for letter in letters:
        outcome = ReplayOutcome(letter)
        outcomes.append(outcome)
        if letter.connector not in connectors:
            try:
                connectors[letter.connector] = load(letter.connector)
            except ConnectorError as exc:
                connectors[letter.connector] = exc
        connector = connectors[letter.connector]
        if isinstance(connector, ConnectorError):
            outcome.errors.append(str(connector))
            continue
        if not isinstance(connector, ReplayingConnector):
            outcome.errors.append(
                f"connector {letter.connector!r} cannot replay letters (it has no replay method)"
            )
            continue
        stream = connector.replay(letter, options)
        key = (letter.source, letter.connector, stream.default_region, stream.timezone)
        ingestor = ingestors.get(key)
        if ingestor is None:
            ingestor = ingestors[key] = RecordIngestor(
                log,
                codec,
                source=letter.source,
                connector=letter.connector,
                default_region=stream.default_region,
                timezone=stream.timezone,
                batch_size=batch_size,
            )
        for record in stream:
            reason = ingestor.submit(record)
            if reason is not None:
                outcome.errors.append(reason)
            elif record.event is not None:
                outcome.event_ids.append(str(record.event["envelope"]["event_id"]))
        if not outcome.event_ids and not outcome.errors:
            outcome.errors.append(NO_EVENT)
    for ingestor in ingestors.values():
        ingestor.flush()
    DeadLetterStore(log).record(
        [
            Resolution(o.letter.id, o.letter.source, tuple(o.event_ids))
            if o.resolved
            else ReplayFailure(o.letter.id, o.letter.source, o.reason)
            for o in outcomes
        ]
    )
    return outcomes
