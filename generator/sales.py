"""``crm_contacts.csv`` (identify per contact) and ``leads.csv`` (lead_created + deal_closed).

The CRM knows business customers under its own id, in a US-style export (``mm/dd/yyyy``, New
York time). Some people were entered twice: a second contact with another id, an abbreviated
name ("J. Smith" next to "John Smith") and another spelling of the company ("ACME Corporation"
next to "Acme Corp"); only their email and phone tell that both are the same person.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patron.generator import vocab
from patron.generator.dirt import bad_timestamp, bad_value, email_styles, missing, spell_email
from patron.generator.mappings import event_spec, timestamp, typed
from patron.generator.people import PHONE_STYLES, Population
from patron.generator.source import Source
from patron.generator.textcols import choose, join, money, padded_ids, pick, where
from patron.generator.timefmt import US_PER_DAY, format_times
from patron.generator.timeline import Window, sample_times

CRM_FORMAT = "%m/%d/%Y %H:%M"
CRM_ZONE = "America/New_York"
LEAD_FORMAT = "%Y-%m-%d %H:%M:%S"
CRM_COLUMNS = ("crm_id", "first_name", "last_name", "full_name", "company", "title", "email", "phone", "city",
               "country", "created_at", "updated_at")  # fmt: skip
LEAD_COLUMNS = ("lead_id", "email", "first_name", "last_name", "company", "lead_source", "stage", "created_at",
                "deal_id", "closed_at", "outcome", "amount", "currency", "lost_reason")  # fmt: skip
SECOND_CONTACT_SHARE = 0.06
BAD_EMAILS = ("anna.schmidt(at)gmail.com", "john smith@acme.com", "n/a")


def _name_variant(pop: Population, who: np.ndarray, style: np.ndarray) -> pa.Array:
    """0 "John Smith", 1 "J. Smith", 2 "Smith, John", 3 "JOHN SMITH"."""
    first = pick(vocab.FIRST_NAMES, pop.first[who])
    last = pick(vocab.LAST_NAMES, pop.last[who])
    full = join(first, " ", last)
    initial = join(pc.utf8_slice_codeunits(first, 0, 1), ". ", last)
    return choose(style, full, initial, join(last, ", ", first), pc.utf8_upper(full))


def crm_contacts(pop: Population, window: Window, rng: np.random.Generator) -> Source:
    primary = np.flatnonzero(pop.in_crm)
    second = primary[rng.random(len(primary)) < SECOND_CONTACT_SHARE]
    owner = np.concatenate([primary, second])
    n = len(owner)
    is_second = np.arange(n) >= len(primary)
    crm_id = pa.concat_arrays(
        [pop.crm_id.take(pa.array(primary)), padded_ids("C-", 9_000_000 + np.arange(len(second)), 7)]
    )
    created = pop.life.signup[owner] - (rng.uniform(0, 60, n) * US_PER_DAY).astype(np.int64)
    updated = np.maximum(created, window.start) + (
        rng.random(n) * (window.end - np.maximum(created, window.start))
    ).astype(np.int64)
    name_style = np.where(is_second, 1, np.where(rng.random(n) < 0.15, rng.integers(2, 4, n), 0))
    company_variant = np.where(is_second | (rng.random(n) < 0.3), rng.integers(1, 4, n), 0)
    email_style = email_styles(rng, n)
    has_phone = rng.random(n) < 0.75
    phone_style = rng.integers(0, PHONE_STYLES, size=n)
    order = np.argsort(updated, kind="stable")

    def render(rows: np.ndarray) -> pa.Table:
        records = order[rows]
        who = owner[records]
        german = pop.german[who]
        abbreviated = is_second[records]
        first = pick(vocab.FIRST_NAMES, pop.first[who])
        values = [
            crm_id.take(pa.array(records)),
            pc.if_else(pa.array(abbreviated), join(pc.utf8_slice_codeunits(first, 0, 1), "."), first),
            pick(vocab.LAST_NAMES, pop.last[who]),
            _name_variant(pop, who, name_style[records]),
            pop.company_name(who, company_variant[records]),
            pick(vocab.TITLES, pop.title[who]),
            spell_email(pop.email.take(pa.array(who)), email_style[records]),
            where(has_phone[records], pop.phone(who, "US", phone_style[records])),
            pc.if_else(
                pa.array(german), pick(vocab.CITIES_DE, pop.city[who]), pick(vocab.CITIES_US, pop.city[who])
            ),
            pick(("US", "DE"), german.astype(np.int64)),
            format_times(created[records], CRM_FORMAT, CRM_ZONE),
            format_times(updated[records], CRM_FORMAT, CRM_ZONE),
        ]
        return pa.Table.from_arrays(values, names=list(CRM_COLUMNS))

    fields = {
        "occurred_at": timestamp("updated_at", CRM_FORMAT),
        "identifiers.external_ids.crm_id": "crm_id",
        "identifiers.email": "email",
        "identifiers.phone": "phone",
    }
    fields |= {
        f"payload.{column}": column for column in ("first_name", "last_name", "company", "title", "city")
    }
    fields |= {
        "payload.name": "full_name",
        "payload.country": "country",
        "payload.created_at": timestamp("created_at", CRM_FORMAT),
    }
    event = event_spec("identify", ["crm_id", "updated_at"], fields, {"context.channel": "sales"})
    return Source(
        file="crm_contacts.csv",
        person=owner[order],
        events={"identify": np.ones(n, dtype=bool)},
        render=render,
        key="crm_id",
        malformations=(bad_timestamp("updated_at"), bad_value("email", BAD_EMAILS, "invalid email address")),
        mapping={
            "source": "crm",
            "format": "csv",
            "default_region": "US",
            "timezone": CRM_ZONE,
            "events": [event],
        },
    )


def leads(pop: Population, window: Window, rng: np.random.Generator) -> Source:
    rate = np.where(pop.company >= 0, 0.3 / max(window.days, 1.0), 0.0)
    owner, created = sample_times(pop.life, window, rate, rng)
    n = len(owner)
    closed_at = created + (rng.exponential(20.0, n) * US_PER_DAY).astype(np.int64)
    closed = (rng.random(n) < 0.45) & (closed_at < window.end)
    won = rng.random(n) < np.clip(0.4 + 0.15 * pop.satisfaction[owner], 0.05, 0.95)
    amount = (rng.lognormal(np.log(500_000), 0.8, n)).astype(np.int64)
    source = rng.integers(0, len(vocab.LEAD_SOURCES), size=n)
    stage = rng.choice(len(vocab.LEAD_STAGES), size=n, p=[0.5, 0.3, 0.2])
    lost_reason = rng.integers(0, len(vocab.LOST_REASONS), size=n)
    company_variant = rng.integers(0, 4, size=n)
    email_style = email_styles(rng, n)

    def render(rows: np.ndarray) -> pa.Table:
        who = owner[rows]
        is_closed = closed[rows]
        values = [
            padded_ids("L-", rows + 1, 7),
            spell_email(pop.email.take(pa.array(who)), email_style[rows]),
            pick(vocab.FIRST_NAMES, pop.first[who]),
            pick(vocab.LAST_NAMES, pop.last[who]),
            pop.company_name(who, company_variant[rows]),
            pick(vocab.LEAD_SOURCES, source[rows]),
            pick(vocab.LEAD_STAGES, stage[rows]),
            format_times(created[rows], LEAD_FORMAT),
            where(is_closed, padded_ids("D-", rows + 1, 7)),
            where(is_closed, format_times(closed_at[rows], LEAD_FORMAT)),
            where(is_closed, pick(("Lost", "Won"), won[rows].astype(np.int64))),
            where(is_closed, money(amount[rows])),
            where(is_closed, pick(("USD", "EUR"), pop.german[who].astype(np.int64))),
            where(is_closed & ~won[rows], pick(vocab.LOST_REASONS, lost_reason[rows])),
        ]
        return pa.Table.from_arrays(values, names=list(LEAD_COLUMNS))

    lead = event_spec(
        "lead_created",
        ["lead_id"],
        {
            "occurred_at": timestamp("created_at", LEAD_FORMAT),
            "identifiers.email": "email",
            "payload.lead_id": "lead_id",
            "payload.lead_source": "lead_source",
            "payload.stage": "stage",
        },
        {"context.channel": "sales"},
    )
    deal = event_spec(
        "deal_closed",
        ["deal_id"],
        {
            "occurred_at": timestamp("closed_at", LEAD_FORMAT),
            "identifiers.email": "email",
            "payload.deal_id": "deal_id",
            "payload.lead_id": "lead_id",
            "payload.won": {"column": "outcome", "map": {"Won": True, "Lost": False}},
            "payload.amount": typed("amount", "float"),
            "payload.currency": "currency",
            "payload.created_at": timestamp("created_at", LEAD_FORMAT),
            "payload.lost_reason": "lost_reason",
        },
        {"context.channel": "sales"},
        when="closed_at",
    )
    return Source(
        file="leads.csv",
        person=owner,
        events={"lead_created": np.ones(n, dtype=bool), "deal_closed": closed},
        render=render,
        key="lead_id",
        malformations=(missing("lead_id"), bad_timestamp("created_at")),
        mapping={"source": "crm", "format": "csv", "timezone": "UTC", "events": [lead, deal]},
    )
