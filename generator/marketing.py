"""``email_engagement.parquet`` (one row per email sent) and ``consent.jsonl`` (consent changes).

A weekly campaign goes to most opted-in customers who are active and still subscribed; engaged
customers open and click more, unhappy ones unsubscribe more. Every unsubscribe also shows up
as a consent change, next to the consents given at signup and later preference-centre edits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from patron.generator import vocab
from patron.generator.dirt import bad_timestamp, bad_value, missing
from patron.generator.mappings import event_spec, timestamp
from patron.generator.people import Population
from patron.generator.source import TRUNCATED_LINE, Source
from patron.generator.textcols import hashed_ids, join, padded_ids, pick, where
from patron.generator.timefmt import US_PER_DAY, US_PER_HOUR, US_PER_SECOND, format_times
from patron.generator.timeline import NEVER, Window, sample_times

TIMESTAMP = pa.timestamp("us", tz="UTC")
EMAIL_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("campaign_id", pa.string()),
        ("list_id", pa.string()),
        ("subject", pa.string()),
        ("email", pa.string()),
        ("sent_at", TIMESTAMP),
        ("opened_at", TIMESTAMP),
        ("clicked_at", TIMESTAMP),
        ("url", pa.string()),
        ("unsubscribed_at", TIMESTAMP),
        ("unsubscribe_reason", pa.string()),
    ]
)
EMAIL_EVENTS = (("email_sent", "sent_at"), ("email_opened", "opened_at"), ("email_clicked", "clicked_at"))
EMAIL_EVENTS += (("email_unsubscribed", "unsubscribed_at"),)
CONSENT_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _campaign_sends(pop: Population, window: Window, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(campaign, person, sent, unsubscribes) of every email; loops over campaigns only (one a week)."""
    campaign_times = np.arange(window.start + 2 * US_PER_DAY + 9 * US_PER_HOUR, window.end, 7 * US_PER_DAY)
    unsubscribed = np.full(pop.n, NEVER)
    subscribers = np.flatnonzero(pop.email_optin)
    unsubscribe_chance = np.where(pop.satisfaction[subscribers] < -0.5, 0.02, 0.004)
    campaigns, people, sent, unsubscribes = [], [], [], []
    for number, moment in enumerate(campaign_times):
        chosen = rng.random(len(subscribers)) < 0.7
        chosen &= pop.life.active_at(np.full(len(subscribers), moment), subscribers)
        chosen &= unsubscribed[subscribers] == NEVER
        leaves = chosen & (rng.random(len(subscribers)) < unsubscribe_chance)
        send_time = moment + rng.integers(0, 20 * 60 * US_PER_SECOND, size=len(subscribers))
        unsubscribed[subscribers[leaves]] = send_time[leaves]
        campaigns.append(np.full(int(chosen.sum()), number))
        people.append(subscribers[chosen])
        sent.append(send_time[chosen])
        unsubscribes.append(leaves[chosen])
    empty = [np.zeros(0, dtype=np.int64)]
    return tuple(np.concatenate(parts or empty) for parts in (campaigns, people, sent, unsubscribes))


def marketing(pop: Population, window: Window, rng: np.random.Generator, salt: int) -> tuple[Source, Source]:
    campaign, owner, sent, leaves = _campaign_sends(pop, window, rng)
    leaves = leaves.astype(bool)
    order = np.argsort(sent, kind="stable")
    campaign, owner, sent, leaves = campaign[order], owner[order], sent[order], leaves[order]
    n = len(owner)
    open_chance = np.clip(0.2 + 0.5 * pop.engagement[owner], 0, 0.9)
    opened = (rng.random(n) < open_chance) | leaves
    opened_at = sent + (rng.exponential(6.0, n) * US_PER_HOUR).astype(np.int64)
    clicked = opened & ~leaves & (rng.random(n) < 0.3)
    clicked_at = opened_at + (rng.exponential(0.3, n) * US_PER_HOUR).astype(np.int64)
    unsubscribed_at = opened_at + 90 * US_PER_SECOND
    opened &= opened_at < window.end
    clicked &= clicked_at < window.end
    leaves &= unsubscribed_at < window.end
    page = rng.integers(0, len(vocab.PAGES), size=n)
    reason = rng.integers(0, len(vocab.UNSUBSCRIBE_REASONS), size=n)

    def stamp(mask: np.ndarray, values: np.ndarray) -> pa.Array:
        return pa.array(values, type=pa.int64(), mask=~mask).cast(TIMESTAMP)

    def render(rows: np.ndarray) -> pa.Table:
        number = campaign[rows]
        columns = [
            hashed_ids("msg_", rows, salt),
            padded_ids("cmp_", number + 1, 4),
            pick(vocab.EMAIL_LISTS, number % len(vocab.EMAIL_LISTS)),
            pick(vocab.EMAIL_CAMPAIGNS, number % len(vocab.EMAIL_CAMPAIGNS)),
            pop.email.take(pa.array(owner[rows])),
            stamp(np.ones(len(rows), bool), sent[rows]),
            stamp(opened[rows], opened_at[rows]),
            stamp(clicked[rows], clicked_at[rows]),
            where(
                clicked[rows],
                join(vocab.SITE, pick([p[0] for p in vocab.PAGES], page[rows]), "?utm_medium=email"),
            ),
            stamp(leaves[rows], unsubscribed_at[rows]),
            where(leaves[rows], pick(vocab.UNSUBSCRIBE_REASONS, reason[rows])),
        ]
        return pa.Table.from_arrays(columns, schema=EMAIL_SCHEMA)

    message = {
        "identifiers.email": "email",
        "payload.message_id": "message_id",
        "payload.campaign_id": "campaign_id",
        "payload.list_id": "list_id",
        "payload.subject": "subject",
    }
    extra = {
        "email_clicked": {"payload.url": "url"},
        "email_unsubscribed": {"payload.reason": "unsubscribe_reason"},
    }
    channel = {"context.channel": "email"}
    events = [
        event_spec(
            name, ["message_id"], {"occurred_at": column} | message | extra.get(name, {}), channel, column
        )
        for name, column in EMAIL_EVENTS
    ]
    masks = {"email_sent": np.ones(n, bool), "email_opened": opened, "email_clicked": clicked}
    email = Source(
        file="email_engagement.parquet",
        person=owner,
        events=masks | {"email_unsubscribed": leaves},
        render=render,
        key="message_id",
        malformations=(
            missing("message_id"),
            bad_value("email", ("bob at example dot com", "no-email", "@@"), "invalid email address"),
        ),
        mapping={"source": "esp", "format": "parquet", "events": events},
    )
    return email, _consent(pop, window, rng, owner[leaves], unsubscribed_at[leaves], salt)


def _consent(
    pop: Population,
    window: Window,
    rng: np.random.Generator,
    unsubscriber: np.ndarray,
    unsubscribed_at: np.ndarray,
    salt: int,
) -> Source:
    """Signup consents, unsubscribes and preference-centre changes, as a consent tool exports them."""
    signup = pop.life.signup
    joined = np.flatnonzero((signup >= window.start) & (signup < window.end))
    edit_owner, edit_time = sample_times(pop.life, window, np.full(pop.n, 1 / 400), rng)
    purposes, channels, methods = vocab.CONSENT_PURPOSES, vocab.CONSENT_CHANNELS, vocab.CONSENT_METHODS

    def batch(who: np.ndarray, at: np.ndarray, purpose: Any, channel: Any, granted: Any, method: str) -> list:
        size = len(who)
        return [who, at, np.broadcast_to(purpose, size), np.broadcast_to(channel, size),
                np.broadcast_to(granted, size), np.full(size, methods.index(method))]  # fmt: skip

    promotions, email = purposes.index("marketing"), channels.index("email")
    batches = [
        batch(
            joined,
            signup[joined] + 60 * US_PER_SECOND,
            promotions,
            email,
            pop.email_optin[joined],
            "signup_form",
        ),
        batch(
            joined,
            signup[joined] + 61 * US_PER_SECOND,
            purposes.index("analytics"),
            channels.index("all"),
            rng.random(len(joined)) < 0.8,
            "cookie_banner",
        ),
        batch(
            unsubscriber, unsubscribed_at + 5 * US_PER_SECOND, promotions, email, False, "unsubscribe_link"
        ),
        batch(
            edit_owner,
            edit_time,
            rng.integers(0, len(purposes), len(edit_owner)),
            rng.integers(0, len(channels), len(edit_owner)),
            rng.random(len(edit_owner)) < 0.5,
            "preference_center",
        ),
    ]
    owner, time, purpose, channel, granted, method = (
        np.concatenate(parts) for parts in zip(*batches, strict=True)
    )
    keep = time < window.end
    order = np.flatnonzero(keep)[np.argsort(time[keep], kind="stable")]
    owner, time, purpose, channel, granted, method = (
        a[order] for a in (owner, time, purpose, channel, granted, method)
    )
    policy = (time >= window.start + (window.end - window.start) // 2).astype(np.int64)

    def render(rows: np.ndarray) -> pa.Table:
        who = owner[rows]
        columns = {
            "id": hashed_ids("cns_", rows, salt),
            "userId": where(pop.web_account[who], pop.user_id.take(pa.array(who))),
            "email": pop.email.take(pa.array(who)),
            "purpose": pick(vocab.CONSENT_PURPOSES, purpose[rows]),
            "channel": pick(vocab.CONSENT_CHANNELS, channel[rows]),
            "status": pick(("revoked", "granted"), granted[rows].astype(np.int64)),
            "basis": pick(("consent",), np.zeros(len(rows), np.int64)),
            "method": pick(vocab.CONSENT_METHODS, method[rows]),
            "policy_version": pick(vocab.POLICY_VERSIONS, policy[rows]),
            "changed_at": format_times(time[rows], CONSENT_FORMAT, "Europe/Berlin"),
        }
        return pa.table(columns)

    event = event_spec(
        "consent_changed",
        ["id"],
        {
            "occurred_at": timestamp("changed_at"),
            "identifiers.user_id": "userId",
            "identifiers.email": "email",
            "payload.purpose": "purpose",
            "payload.channel": "channel",
            "payload.granted": {"column": "status", "map": {"granted": True, "revoked": False}},
            "payload.basis": "basis",
            "payload.method": "method",
            "payload.policy_version": "policy_version",
        },
    )
    return Source(
        file="consent.jsonl",
        person=owner,
        events={"consent_changed": np.ones(len(owner), dtype=bool)},
        render=render,
        key="id",
        malformations=(TRUNCATED_LINE, bad_timestamp("changed_at"), missing("purpose")),
        mapping={"source": "consent", "format": "jsonl", "events": [event]},
    )
