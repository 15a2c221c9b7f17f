"""The stream topology: which processors run, the topics between them, and the shape of derived events.

::

    patron.events ──► identity ──► patron.identity          (audit: links, merges, refusals, splits)
                              └──► patron.profile-events    (source events keyed by profile id, plus the
                                        │                    links, merges and splits the projection needs)
                                        ▼
                                    profiles ──► patron.profile-events (profile_absorbed hand-overs)

On Kafka the identity stage reads ``patron.identity-input`` (one partition, fed by the runner's
rekey agent) so that it sees one total order; embedded, it reads ``patron.events`` directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from patron.streams.processor import Processor

if TYPE_CHECKING:
    from patron.config import Settings

IDENTITY_INPUT_TOPIC = "patron.identity-input"
IDENTITY_TOPIC = "patron.identity"
PROFILE_EVENTS_TOPIC = "patron.profile-events"

IDENTITY_SOURCE = "patron.identity"
PROFILES_SOURCE = "patron.profiles"
ERASURE_SOURCE = "patron-erasure"
"""Source of the ``erasure_requested`` records `patron erase` appends (projections/erasure.py)."""
OPERATOR_SOURCE = "operator"

NO_CONTEXT: dict[str, Any] = {
    "channel": None,
    "ip": None,
    "user_agent": None,
    "locale": None,
    "campaign": None,
}
NO_IDENTIFIERS: dict[str, Any] = {
    "user_id": None,
    "anonymous_id": None,
    "email": None,
    "phone": None,
    "device_id": None,
    "external_ids": {},
}


def derived_event(
    event_id: str,
    event_type: str,
    *,
    source: str,
    occurred_at: datetime,
    received_at: datetime,
    payload: dict[str, Any],
    identifiers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A catalogue event a processor emits. Its times are its cause's, never the clock's, so that
    re-processing emits byte-identical records (and ids derived from the cause, see ``Emit``)."""
    return {
        "envelope": {
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "source": source,
            "identifiers": identifiers or {**NO_IDENTIFIERS, "external_ids": {}},
            "context": dict(NO_CONTEXT),
        },
        "payload": payload,
    }


def default_processors(settings: Settings | None = None) -> list[Processor]:
    """The processors ``patron run`` and ``patron worker`` execute, upstream first.

    With ``settings`` the profiles stage also evaluates the segment and trigger definitions of
    ``settings.segments_dir`` plus the built-in triggers; without (library use, most tests) it
    evaluates none.
    """
    from patron.identity.processor import IdentityProcessor
    from patron.projections.profile_processor import ProfileProcessor
    from patron.projections.segments.definitions import load_definitions

    definitions = load_definitions(settings.segments_dir) if settings is not None else None
    return [IdentityProcessor(), ProfileProcessor(definitions=definitions)]
