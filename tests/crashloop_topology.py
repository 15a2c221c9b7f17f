"""A small test topology for the runtime tests, importable by the runner subprocesses.

* ``orders`` (patron.events, keyed by routing key): per-customer counts, revenue and order ids,
  mutated in place; every third order emits a ``custom_event`` "loyal_customer" milestone keyed
  ``loyal:<customer key>`` (an ``Emit.key`` override) with an id derived from the order's id.
  It raises on an order whose id is ``POISON`` (a processor bug on one record).
* ``milestones`` (the milestone topic): per-key list of the order counts reached.
* ``census`` (patron.events, ``total_order``): global counts by event type, plus a hash chain of
  every event id in processing order, which detects any reordering, loss or double count.

Topic and processor names get the suffix in ``$PATRON_TOY_SUFFIX`` so tests sharing one broker
do not read each other's records.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import MutableMapping
from typing import Any

from patron.streams.processor import Emit, Processor

MILESTONE_NAMESPACE = uuid.UUID("0d6f4f1e-8d7b-4a51-9f0e-5c3b2a1d9e77")
LOYAL_EVERY = 3
POISON_ORDER = "POISON"


def suffix() -> str:
    return os.environ.get("PATRON_TOY_SUFFIX", "")


def events_topic() -> str:
    return f"patron.events{suffix()}"


def milestones_topic() -> str:
    return f"toy.milestones{suffix()}"


class OrderCounter:
    """Per-customer order counts; emits a milestone every third order."""

    stores = ("customers",)

    def __init__(self) -> None:
        self.name = f"orders{suffix()}"
        self.inputs = (events_topic(),)
        self.output = milestones_topic()

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        key = event["_key"]
        customer = stores["customers"].setdefault(
            key, {"events": 0, "orders": 0, "revenue": 0.0, "order_ids": []}
        )
        customer["events"] += 1  # in place, never assigned back: the store must notice anyway
        if event["envelope"]["event_type"] != "order_completed":
            return []
        payload = event["payload"]
        if payload["order_id"] == POISON_ORDER:
            raise ValueError(f"order {POISON_ORDER} is poison")
        customer["orders"] += 1
        customer["revenue"] = round(customer["revenue"] + payload["revenue"], 2)
        customer["order_ids"].append(payload["order_id"])
        if customer["orders"] % LOYAL_EVERY:
            return []
        return [Emit(self.output, _milestone(event, customer["orders"]), key=f"loyal:{key}")]


class MilestoneTally:
    """Per milestone key, the order counts reached, in order."""

    stores = ("tally",)

    def __init__(self) -> None:
        self.name = f"milestones{suffix()}"
        self.inputs = (milestones_topic(),)

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        tally = stores["tally"]
        tally[event["_key"]] = [*tally.get(event["_key"], []), event["payload"]["properties"]["orders"]]
        return []


class Census:
    """Global counts over one total order of all events (hence ``total_order``)."""

    stores = ("totals",)
    total_order = True

    def __init__(self) -> None:
        self.name = f"census{suffix()}"
        self.inputs = (events_topic(),)

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        totals = stores["totals"]
        counts = totals.setdefault("counts", {"events": 0, "by_type": {}})
        counts["events"] += 1
        event_type = event["envelope"]["event_type"]
        counts["by_type"][event_type] = counts["by_type"].get(event_type, 0) + 1
        previous = totals.get("chain", "")
        totals["chain"] = hashlib.blake2b(
            f"{previous}:{event['envelope']['event_id']}".encode(), digest_size=16
        ).hexdigest()
        return []


def _milestone(order: dict[str, Any], count: int) -> dict[str, Any]:
    envelope = order["envelope"]
    return {
        "envelope": {
            **envelope,
            "event_id": str(uuid.uuid5(MILESTONE_NAMESPACE, f"loyal:{envelope['event_id']}")),
            "event_type": "custom_event",
            "source": "toy.orders",
        },
        "payload": {
            "name": "loyal_customer",
            "properties": {"orders": str(count), "order_id": order["payload"]["order_id"]},
        },
    }


def toy_processors() -> list[Processor]:
    """The whole toy topology."""
    return [OrderCounter(), MilestoneTally(), Census()]
