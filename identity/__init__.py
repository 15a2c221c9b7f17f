"""Identity resolution: the pure, deterministic core that maps events to customer profiles.

The runtime calls ``resolve`` once per source event and ``split`` or ``merge`` once per request, in one
global order, persists ``IdentityState.to_bytes`` snapshots, and appends the returned identity events
to their own log; ``rebuild`` (or ``apply`` one by one) turns that log back into the state.
"""

from patron.identity.events import PII_FIELDS, IdentityEvent
from patron.identity.merge import merge
from patron.identity.resolver import resolve
from patron.identity.rules import IdentityRules, default_rules, load_rules
from patron.identity.split import split
from patron.identity.state import IdentityState, apply, rebuild

__all__ = [
    "PII_FIELDS",
    "IdentityEvent",
    "IdentityRules",
    "IdentityState",
    "apply",
    "default_rules",
    "load_rules",
    "merge",
    "rebuild",
    "resolve",
    "split",
]
