"""The routing key: which identifier decides an event's partition.

Kafka keeps order only within a partition, so every event must be keyed by an
identifier that is the same for all of one customer's events from a source. The
most stable identifier wins; identity resolution (a later stage) joins across keys.
Values are hashed so that no personal data ends up in record keys, which stay
readable after a subject's PII is crypto-shredded.
"""

from __future__ import annotations

import hashlib
from typing import Any

KEY_PRIORITY = ("user_id", "anonymous_id", "email", "phone", "device_id")


def routing_key(identifiers: dict[str, Any], event_id: str) -> bytes:
    """``kind:hash`` of the highest-priority identifier present; the event id when there is none."""
    for kind in KEY_PRIORITY:
        value = identifiers.get(kind)
        if value:
            return _key(kind, value)
    external = identifiers.get("external_ids") or {}
    if external:
        kind = min(external)
        return _key(kind, external[kind])
    return _key("event", event_id)


def _key(kind: str, value: str) -> bytes:
    return f"{kind}:{hashlib.blake2b(value.encode(), digest_size=12).hexdigest()}".encode()
