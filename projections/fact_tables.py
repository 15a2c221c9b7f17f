"""Fact tables: the per-customer facts of every live profile as Arrow tables, the input of every score.

Two producers build the same tables (and a test holds them to it): ``tables_from_profiles`` here,
from the profile store the stream processors keep current (each live profile's parts merged), and
the vectorised rebuild in ``projections/rebuild.py``, from the source events in the log. The
schemas below are the contract with the score builders (``projections/rfm.py`` and friends).

A profile without any source event (only identifiers so far) has no facts and no ``customers`` row.
Money sums are exact (see ``projections/facts.py``); times are ``timestamp[us, UTC]``, days ``date32``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import orjson
import pyarrow as pa

from patron.projections.facts import Facts
from patron.projections.profile_processor import ProfileProcessor
from patron.projections.profile_rules import ProfilePlan, load_profile_rules
from patron.projections.profiles import Profile, merge_part, new_part
from patron.streams.local_log import LocalLog
from patron.streams.log import EventLog
from patron.streams.state import read_changelog, store_name

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TIME = pa.timestamp("us", tz="UTC")
DAY = pa.date32()
ID = ("profile_id", pa.string())

CUSTOMERS = pa.schema(
    [
        ID,
        ("first_seen", TIME),
        ("last_seen", TIME),
        ("signup_at", TIME),
        ("account", pa.string()),
        ("plan", pa.string()),
        ("country", pa.string()),
        ("events", pa.int64()),
    ]
)
ORDERS_DAILY = pa.schema([ID, ("day", DAY), ("orders", pa.int64()), ("revenue", pa.float64())])
REFUNDS_DAILY = pa.schema([ID, ("day", DAY), ("refunds", pa.int64()), ("amount", pa.float64())])
ACTIVITY_DAILY = pa.schema(
    [
        ID,
        ("day", DAY),
        ("events", pa.int64()),
        ("logins", pa.int64()),
        ("feature_uses", pa.int64()),
        ("sessions", pa.int64()),
    ]
)
TICKETS = pa.schema(
    [
        ID,
        ("ticket_id", pa.string()),
        ("priority", pa.string()),
        ("opened_at", TIME),
        ("first_response_seconds", pa.int64()),
        ("resolved_at", TIME),
        ("resolution_seconds", pa.int64()),
    ]
)
SURVEYS_DAILY = pa.schema(
    [
        ID,
        ("day", DAY),
        ("kind", pa.string()),
        ("responses", pa.int64()),
        ("score_sum", pa.int64()),
        ("promoters", pa.int64()),
        ("detractors", pa.int64()),
    ]
)
NPS_LATEST = pa.schema([ID, ("answered_at", TIME), ("score", pa.int64())])
PAYMENTS_DAILY = pa.schema([ID, ("day", DAY), ("failures", pa.int64()), ("failed_amount", pa.float64())])
SUBSCRIPTIONS = pa.schema(
    [
        ID,
        ("subscription_id", pa.string()),
        ("plan", pa.string()),
        ("amount", pa.float64()),
        ("billing_interval", pa.string()),
        ("started_at", TIME),
        ("period_end", TIME),
        ("cancelled_at", TIME),
        ("renewals", pa.int64()),
    ]
)
EMAILS_DAILY = pa.schema(
    [
        ID,
        ("day", DAY),
        ("sent", pa.int64()),
        ("opened", pa.int64()),
        ("clicked", pa.int64()),
        ("unsubscribed", pa.int64()),
    ]
)
LEADS = pa.schema([ID, ("lead_id", pa.string()), ("lead_source", pa.string()), ("created_at", TIME)])
DEALS = pa.schema(
    [
        ID,
        ("deal_id", pa.string()),
        ("lead_id", pa.string()),
        ("won", pa.bool_()),
        ("amount", pa.float64()),
        ("created_at", TIME),
        ("closed_at", TIME),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "customers": CUSTOMERS,
    "orders_daily": ORDERS_DAILY,
    "refunds_daily": REFUNDS_DAILY,
    "activity_daily": ACTIVITY_DAILY,
    "tickets": TICKETS,
    "surveys_daily": SURVEYS_DAILY,
    "nps_latest": NPS_LATEST,
    "payments_daily": PAYMENTS_DAILY,
    "subscriptions": SUBSCRIPTIONS,
    "emails_daily": EMAILS_DAILY,
    "leads": LEADS,
    "deals": DEALS,
}
"""Table name -> Arrow schema, in the order of ``FactTables``' fields."""

KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("profile_id",),
    "orders_daily": ("profile_id", "day"),
    "refunds_daily": ("profile_id", "day"),
    "activity_daily": ("profile_id", "day"),
    "tickets": ("profile_id", "ticket_id"),
    "surveys_daily": ("profile_id", "day", "kind"),
    "nps_latest": ("profile_id",),
    "payments_daily": ("profile_id", "day"),
    "subscriptions": ("profile_id", "subscription_id"),
    "emails_daily": ("profile_id", "day"),
    "leads": ("profile_id", "lead_id"),
    "deals": ("profile_id", "deal_id"),
}
"""Each table's primary key: unique per row, and the canonical sort order."""

CUSTOMER_TRAITS = {"signed_up_at": "signup_at", "company": "account", "plan": "plan", "country": "country"}
"""Profile trait -> ``customers`` column it fills."""


@dataclass(frozen=True)
class FactTables:
    """One Arrow table per fact table, schemas as in ``SCHEMAS``."""

    customers: pa.Table
    orders_daily: pa.Table
    refunds_daily: pa.Table
    activity_daily: pa.Table
    tickets: pa.Table
    surveys_daily: pa.Table
    nps_latest: pa.Table
    payments_daily: pa.Table
    subscriptions: pa.Table
    emails_daily: pa.Table
    leads: pa.Table
    deals: pa.Table

    def items(self) -> Iterator[tuple[str, pa.Table]]:
        """(name, table) pairs, in ``SCHEMAS`` order."""
        for field in fields(self):
            yield field.name, getattr(self, field.name)

    def sorted(self) -> FactTables:
        """The same tables in canonical order (by each table's key), so two builds compare with ``==``."""
        return FactTables(
            **{
                name: table.sort_by([(key, "ascending") for key in KEYS[name]])
                for name, table in self.items()
            }
        )


def signup_time(value: Any, first_seen: int) -> int:
    """``signed_up_at`` as micros: an ISO 8601 text (UTC when no zone is given), else ``first_seen``."""
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return first_seen
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return (moment - EPOCH) // dt.timedelta(microseconds=1)
    return first_seen


def trait_text(value: Any) -> str | None:
    """A trait value as a text column: text as is, anything else (numbers, flags) as JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _day(day: str) -> dt.date:
    return dt.date.fromisoformat(day)


def customer_row(
    profile_id: str, first_seen: int, last_seen: int, events: int, traits: dict[str, Any]
) -> dict[str, Any]:
    """The ``customers`` row of a profile: seen times, event count and the traits it shows (winning
    entries as ``projections/profiles.py`` keeps them)."""
    values = {column: traits[trait]["value"] for trait, column in CUSTOMER_TRAITS.items() if trait in traits}
    return {
        "profile_id": profile_id,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "signup_at": signup_time(values.get("signup_at"), first_seen),
        "account": trait_text(values.get("account")),
        "plan": trait_text(values.get("plan")),
        "country": trait_text(values.get("country")),
        "events": events,
    }


class ColumnLists:
    """Python lists per column of several tables, filled row by row, then made Arrow tables: building
    columns and converting once is far cheaper than Arrow row appends."""

    def __init__(self, schemas: dict[str, pa.Schema]) -> None:
        self.schemas = schemas
        self.lists: dict[str, dict[str, list[Any]]] = {
            name: {field.name: [] for field in schema} for name, schema in schemas.items()
        }

    def add(self, table: str, *values: Any) -> None:
        for column, value in zip(self.lists[table].values(), values, strict=True):
            column.append(value)

    def arrow(self, table: str) -> pa.Table:
        return pa.Table.from_pydict(self.lists[table], schema=self.schemas[table])


class _FactRows(ColumnLists):
    """The fact tables' rows, from merged facts."""

    def __init__(self) -> None:
        super().__init__(SCHEMAS)

    def add_facts(self, pid: str, facts: Facts) -> None:
        """Every fact-table row of one profile's merged facts."""
        for day, (events, logins, uses, sessions) in (facts.get("activity") or {}).items():
            self.add("activity_daily", pid, _day(day), events, logins, uses, sessions)
        for table, name in (
            ("orders_daily", "orders"),
            ("refunds_daily", "refunds"),
            ("payments_daily", "payments"),
        ):
            for day, (count, amount) in (facts.get(name) or {}).items():
                self.add(table, pid, _day(day), count, amount / 1e6)
        for day, counts in (facts.get("emails") or {}).items():
            self.add("emails_daily", pid, _day(day), *counts)
        for key, counts in (facts.get("surveys") or {}).items():
            day, kind = key.split("/", 1)
            self.add("surveys_daily", pid, _day(day), kind, *counts)
        if facts.get("nps") is not None:
            at, _, score = facts["nps"]
            self.add("nps_latest", pid, at, score)
        for ticket_id, ticket in (facts.get("tickets") or {}).items():
            opened, responded, resolved = (ticket.get(n) or (None, None, None) for n in TICKET_RECORDS)
            self.add("tickets", pid, ticket_id, opened[2], opened[0], responded[2], resolved[0], resolved[2])
        for subscription_id, entry in (facts.get("subscriptions") or {}).items():
            _, _, plan, amount, interval = entry["latest"]
            self.add(
                "subscriptions",
                pid,
                subscription_id,
                plan,
                amount,
                interval,
                entry["started"],
                entry["period_end"],
                entry["cancelled"],
                entry["renewals"],
            )
        for lead_id, (at, _, lead_source) in (facts.get("leads") or {}).items():
            self.add("leads", pid, lead_id, lead_source, at)
        for deal_id, (at, _, lead_id, won, amount, created) in (facts.get("deals") or {}).items():
            self.add("deals", pid, deal_id, lead_id, won, amount, created, at)

    def tables(self) -> FactTables:
        return FactTables(**{name: self.arrow(name) for name in SCHEMAS})


TICKET_RECORDS = ("opened", "responded", "resolved")


def tables_from_profiles(states: Iterable[tuple[str, Profile]], plan: ProfilePlan) -> FactTables:
    """Fact tables of the live profiles among ``states`` (tombstones of merged profiles skipped)."""
    out = _FactRows()
    for profile_id, profile in states:
        if "merged_into" in profile:
            continue
        total = new_part()
        for part in profile["parts"].values():
            merge_part(total, part, plan)
        if total["first_seen"] is None:
            continue
        out.add(
            "customers",
            *customer_row(
                profile_id,
                total["first_seen"],
                total["last_seen"],
                sum(total["types"].values()),
                total["traits"],
            ).values(),
        )
        out.add_facts(profile_id, total["facts"])
    return out.tables()


def stored_profiles(log: LocalLog) -> Iterator[tuple[str, Profile]]:
    """The committed profile store of the embedded runner (profile id, state), tombstones included."""
    name = store_name(ProfileProcessor.name, "profiles")
    for key, value in log.db.execute("SELECT key, value FROM state WHERE store = ? ORDER BY key", (name,)):
        yield bytes(key).decode(), orjson.loads(value)


def changelog_profiles(log: EventLog, app_id: str) -> Iterator[tuple[str, Profile]]:
    """The Kafka worker's profile table, folded from its changelog topic (``patron worker``'s app id)."""
    yield from read_changelog(log, app_id, ProfileProcessor.name, "profiles").items()


def incremental_tables(log: LocalLog, plan: ProfilePlan | None = None) -> FactTables:
    """Fact tables from the profile store ``patron run`` keeps (what the processors have folded so far)."""
    return tables_from_profiles(stored_profiles(log), plan or load_profile_rules().plan)


def kafka_tables(log: EventLog, app_id: str, plan: ProfilePlan | None = None) -> FactTables:
    """Fact tables from the profile table of ``patron worker`` on Kafka (same builder, same tables)."""
    return tables_from_profiles(changelog_profiles(log, app_id), plan or load_profile_rules().plan)
