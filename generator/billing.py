"""``billing.parquet``: subscription lifecycle events from the billing system, one row per event.

A subscriber's subscription starts shortly after signup, renews every period while they are
active, and is cancelled when they churn; a reactivated customer starts a new one. Renewals
of unhappy customers fail more often. The kind of each row is told by which of ``started_at``,
``renewed_at``, ``cancelled_at`` or ``failed_at`` is set (the mapping's ``when:`` columns).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from patron.generator import vocab
from patron.generator.dirt import bad_value, missing
from patron.generator.mappings import event_spec
from patron.generator.people import Population
from patron.generator.source import Source
from patron.generator.textcols import hashed_ids, pick, where
from patron.generator.timefmt import US_PER_DAY, US_PER_HOUR
from patron.generator.timeline import NEVER, Window

STARTED, RENEWED, CANCELLED, FAILED = range(4)
KINDS = ("subscription_started", "subscription_renewed", "subscription_cancelled", "payment_failed")
PERIOD_DAYS = np.array([30, 365])
INTERVALS = ("month", "year")
TIMESTAMP = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("subscription_id", pa.string()),
        ("customer_id", pa.string()),
        ("email", pa.string()),
        ("plan", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("billing_interval", pa.string()),
        ("period_start", TIMESTAMP),
        ("period_end", TIMESTAMP),
        ("started_at", TIMESTAMP),
        ("trial_end", TIMESTAMP),
        ("renewed_at", TIMESTAMP),
        ("renewal_number", pa.int32()),
        ("cancelled_at", TIMESTAMP),
        ("at_period_end", pa.bool_()),
        ("cancel_reason", pa.string()),
        ("failed_at", TIMESTAMP),
        ("payment_id", pa.string()),
        ("failure_code", pa.string()),
        ("failure_message", pa.string()),
        ("attempt", pa.int32()),
    ]
)


def _subscriptions(pop: Population, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner, start, end) of every subscription: one per lifecycle span of a subscriber."""
    who = np.flatnonzero(pop.subscriber)
    life = pop.life
    back = who[life.reactivate[who] < NEVER]
    owner = np.concatenate([who, back])
    begin = np.concatenate([life.signup[who], life.reactivate[back]])
    end = np.concatenate([life.churn[who], np.full(len(back), NEVER)])
    start = begin + (rng.exponential(3.0, len(owner)) * US_PER_DAY).astype(np.int64)
    keep = start < end
    return owner[keep], start[keep], end[keep]


def billing(pop: Population, window: Window, rng: np.random.Generator, salt: int) -> Source:
    owner, start, end = _subscriptions(pop, rng)
    subs = len(owner)
    yearly = (rng.random(subs) < 0.2).astype(np.int64)
    period = PERIOD_DAYS[yearly] * US_PER_DAY
    plan = rng.choice(len(vocab.PLANS), size=subs, p=[0.5, 0.35, 0.15])
    monthly_cents = np.array([cents for _, cents in vocab.PLANS])[plan]
    price_cents = np.where(yearly == 1, monthly_cents * 10, monthly_cents)
    # Periods k with start + k * period inside [window.start, min(end, window.end)).
    first_k = np.maximum(0, -((start - window.start) // period))
    stop = np.minimum(end, window.end)
    last_k = np.where(stop > start, (stop - 1 - start) // period, -1)
    periods = np.maximum(last_k - first_k + 1, 0)
    sub = np.repeat(np.arange(subs), periods)
    k = first_k[sub] + np.arange(len(sub)) - np.repeat(np.cumsum(periods) - periods, periods)
    at = start[sub] + k * period[sub]
    kind = np.where(k == 0, STARTED, RENEWED)
    # Cancellations at churn, inside the window.
    cancelled = np.flatnonzero((end >= window.start) & (end < window.end) & (end > start))
    cancel_k = (end[cancelled] - start[cancelled]) // period[cancelled]
    # Failed renewal charges an hour before the renewal goes through on retry.
    unhappy = pop.satisfaction[owner[sub]] < -0.5
    failing = np.flatnonzero((kind == RENEWED) & (rng.random(len(sub)) < np.where(unhappy, 0.15, 0.04)))
    sub = np.concatenate([sub, cancelled, sub[failing]])
    k = np.concatenate([k, cancel_k, k[failing]])
    at = np.concatenate([at, end[cancelled], at[failing] - US_PER_HOUR])
    kind = np.concatenate([kind, np.full(len(cancelled), CANCELLED), np.full(len(failing), FAILED)])
    keep = (at >= window.start) & (at < window.end)
    order = np.flatnonzero(keep)[np.argsort(at[keep], kind="stable")]
    sub, k, at, kind = sub[order], k[order], at[order], kind[order]
    n = len(sub)
    trial = (kind == STARTED) & (rng.random(n) < 0.3)
    at_period_end = rng.random(n) < 0.7
    cancel_reason = rng.integers(0, len(vocab.CANCEL_REASONS), size=n)
    failure = rng.integers(0, len(vocab.FAILURE_CODES), size=n)
    attempt = 1 + rng.binomial(2, 0.3, size=n)

    def stamp(mask: np.ndarray, values: np.ndarray) -> pa.Array:
        return pa.array(values, type=pa.int64(), mask=~mask).cast(TIMESTAMP)

    def render(rows: np.ndarray) -> pa.Table:
        s, kinds = sub[rows], kind[rows]
        who = owner[s]
        period_start = start[s] + k[rows] * period[s]
        is_ = {name: kinds == value for name, value in zip(KINDS, range(4), strict=True)}
        failed = is_["payment_failed"]
        columns = [
            hashed_ids("evt_", rows, salt),
            hashed_ids("sub_", s, salt),
            pop.billing_id.take(pa.array(who)),
            pop.email.take(pa.array(who)),
            pick([name for name, _ in vocab.PLANS], plan[s]),
            pa.array(price_cents[s] / 100),
            pick(("USD", "EUR"), pop.german[who].astype(np.int64)),
            pick(INTERVALS, yearly[s]),
            stamp(np.ones(len(rows), bool), period_start),
            stamp(np.ones(len(rows), bool), period_start + period[s]),
            stamp(is_["subscription_started"], at[rows]),
            stamp(trial[rows], at[rows] + 14 * US_PER_DAY),
            stamp(is_["subscription_renewed"], at[rows]),
            pa.array(k[rows].astype(np.int32), mask=~is_["subscription_renewed"]),
            stamp(is_["subscription_cancelled"], at[rows]),
            pa.array(at_period_end[rows], mask=~is_["subscription_cancelled"]),
            where(is_["subscription_cancelled"], pick(vocab.CANCEL_REASONS, cancel_reason[rows])),
            stamp(failed, at[rows]),
            where(failed, hashed_ids("ch_", rows, salt)),
            where(failed, pick([code for code, _ in vocab.FAILURE_CODES], failure[rows])),
            where(failed, pick([message for _, message in vocab.FAILURE_CODES], failure[rows])),
            pa.array(attempt[rows].astype(np.int32), mask=~failed),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)

    common = {
        "identifiers.email": "email",
        "identifiers.external_ids.billing_customer_id": "customer_id",
        "payload.amount": "amount",
        "payload.currency": "currency",
    }
    subscription = common | {
        "payload.subscription_id": "subscription_id",
        "payload.plan": "plan",
        "payload.billing_interval": "billing_interval",
        "payload.period_start": "period_start",
        "payload.period_end": "period_end",
    }
    events = [
        event_spec(
            "subscription_started",
            ["event_id"],
            {"occurred_at": "started_at"} | subscription | {"payload.trial_end": "trial_end"},
            when="started_at",
        ),
        event_spec(
            "subscription_renewed",
            ["event_id"],
            {"occurred_at": "renewed_at"} | subscription | {"payload.renewal_number": "renewal_number"},
            when="renewed_at",
        ),
        event_spec(
            "subscription_cancelled",
            ["event_id"],
            {"occurred_at": "cancelled_at"}
            | subscription
            | {"payload.at_period_end": "at_period_end", "payload.reason": "cancel_reason"},
            when="cancelled_at",
        ),
        event_spec(
            "payment_failed",
            ["event_id"],
            {"occurred_at": "failed_at"}
            | common
            | {
                "payload.payment_id": "payment_id",
                "payload.subscription_id": "subscription_id",
                "payload.failure_code": "failure_code",
                "payload.failure_message": "failure_message",
                "payload.attempt": "attempt",
            },
            when="failed_at",
        ),
    ]
    return Source(
        file="billing.parquet",
        person=owner[sub],
        events={name: kind == value for value, name in enumerate(KINDS)},
        render=render,
        key="event_id",
        malformations=(
            missing("subscription_id", "payment_id"),
            bad_value("currency", ("EURO", "€", "Dollar"), "invalid currency code"),
        ),
        mapping={"source": "billing", "format": "parquet", "events": events},
    )
