"""``support_tickets.csv`` (one row per ticket, three events) and ``surveys.csv`` (NPS and CSAT).

Unhappy customers (low ``satisfaction``) open more tickets, wait longer for answers, reopen
more often and score lower, and they are also the ones who churn sooner: the later churn
and health projections have real signal to find. CSAT surveys follow resolved tickets.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from patron.generator import vocab
from patron.generator.dirt import bad_timestamp, bad_value, email_styles, missing, spell_email
from patron.generator.mappings import event_spec, timestamp, typed
from patron.generator.people import PHONE_STYLES, Population
from patron.generator.source import Source
from patron.generator.textcols import int_strings, padded_ids, pick, where
from patron.generator.timefmt import US_PER_HOUR, US_PER_SECOND, epoch, format_times
from patron.generator.timeline import Window, sample_times

ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
TICKET_COLUMNS = ("ticket_id", "requester_email", "requester_phone", "crm_id", "subject", "category", "priority",
                  "channel", "opened_at", "agent_id", "first_response_at", "response_seconds", "resolved_at",
                  "resolution", "resolution_seconds", "reopened_count")  # fmt: skip
SURVEY_COLUMNS = (
    "response_id",
    "survey_id",
    "kind",
    "score",
    "comment",
    "email",
    "ticket_id",
    "submitted_at",
)
NPS, CSAT = 0, 1


def _lognormal_seconds(rng: np.random.Generator, median_hours: float, scale: np.ndarray) -> np.ndarray:
    return (rng.lognormal(np.log(median_hours * 3600), 1.0, size=len(scale)) * scale).astype(np.int64) + 60


def support(pop: Population, window: Window, rng: np.random.Generator) -> tuple[Source, Source]:
    """Tickets and the surveys that refer to them."""
    z = pop.satisfaction
    owner, opened = sample_times(pop.life, window, 0.006 * np.exp(-0.6 * z), rng)
    n = len(owner)
    slow = np.exp(-0.3 * z[owner])
    response = _lognormal_seconds(rng, 3.0, slow)
    resolution = response + _lognormal_seconds(rng, 30.0, slow)
    responded = opened + response * US_PER_SECOND < window.end
    resolved = responded & (opened + resolution * US_PER_SECOND < window.end) & (rng.random(n) < 0.95)
    subject = rng.integers(0, len(vocab.TICKET_SUBJECTS), size=n)
    channel = rng.integers(0, len(vocab.TICKET_CHANNELS), size=n)
    priority = rng.choice(len(vocab.TICKET_PRIORITIES), size=n, p=[0.25, 0.5, 0.2, 0.05])
    agent = rng.integers(0, len(vocab.AGENTS), size=n)
    resolution_kind = rng.choice(len(vocab.RESOLUTIONS), size=n, p=[0.6, 0.15, 0.1, 0.1, 0.05])
    reopened = rng.poisson(0.15 + 0.35 * (z[owner] < -1))
    email_style = email_styles(rng, n)
    phone_style = rng.integers(0, PHONE_STYLES, size=n)
    by_phone = vocab.TICKET_CHANNELS.index("phone")

    def render(rows: np.ndarray) -> pa.Table:
        who = owner[rows]
        answered, closed = responded[rows], resolved[rows]
        values = [
            padded_ids("T-", rows + 1, 7),
            spell_email(pop.email.take(pa.array(who)), email_style[rows]),
            where(channel[rows] == by_phone, pop.phone(who, "US", phone_style[rows])),
            where(pop.in_crm[who], pop.crm_id.take(pa.array(who))),
            pick(vocab.TICKET_SUBJECTS, subject[rows]),
            pick(vocab.TICKET_CATEGORIES, subject[rows]),
            pick(vocab.TICKET_PRIORITIES, priority[rows]),
            pick(vocab.TICKET_CHANNELS, channel[rows]),
            format_times(opened[rows], ISO_SECONDS),
            where(answered, pick(vocab.AGENTS, agent[rows])),
            where(answered, format_times(opened[rows] + response[rows] * US_PER_SECOND, ISO_SECONDS)),
            where(answered, int_strings(response[rows])),
            where(closed, format_times(opened[rows] + resolution[rows] * US_PER_SECOND, ISO_SECONDS)),
            where(closed, pick(vocab.RESOLUTIONS, resolution_kind[rows])),
            where(closed, int_strings(resolution[rows])),
            where(closed, int_strings(reopened[rows])),
        ]
        return pa.Table.from_arrays(values, names=list(TICKET_COLUMNS))

    ids = {
        "identifiers.email": "requester_email",
        "identifiers.phone": "requester_phone",
        "identifiers.external_ids.crm_id": "crm_id",
        "payload.ticket_id": "ticket_id",
    }
    constants = {"context.channel": "support"}
    ticket_events = [
        event_spec(
            "ticket_opened",
            ["ticket_id"],
            {"occurred_at": timestamp("opened_at")}
            | ids
            | {
                "payload.subject": "subject",
                "payload.priority": "priority",
                "payload.category": "category",
                "payload.channel": "channel",
            },
            constants,
            when="opened_at",
        ),
        event_spec(
            "ticket_first_responded",
            ["ticket_id"],
            {"occurred_at": timestamp("first_response_at")}
            | ids
            | {"payload.agent_id": "agent_id", "payload.response_seconds": typed("response_seconds", "int")},
            constants,
            when="first_response_at",
        ),
        event_spec(
            "ticket_resolved",
            ["ticket_id"],
            {"occurred_at": timestamp("resolved_at")}
            | ids
            | {
                "payload.resolution": "resolution",
                "payload.resolution_seconds": typed("resolution_seconds", "int"),
                "payload.reopened_count": typed("reopened_count", "int", default=0),
            },
            constants,
            when="resolved_at",
        ),
    ]
    tickets = Source(
        file="support_tickets.csv",
        person=owner,
        events={
            "ticket_opened": np.ones(n, bool),
            "ticket_first_responded": responded,
            "ticket_resolved": resolved,
        },
        render=render,
        key="ticket_id",
        malformations=(bad_timestamp("opened_at"), missing("ticket_id")),
        mapping={"source": "helpdesk", "format": "csv", "default_region": "US", "events": ticket_events},
    )
    resolved_at = opened + resolution * US_PER_SECOND
    return tickets, _surveys(pop, window, rng, owner, resolved, resolved_at)


def _surveys(
    pop: Population,
    window: Window,
    rng: np.random.Generator,
    ticket_owner: np.ndarray,
    resolved: np.ndarray,
    resolved_at: np.ndarray,
) -> Source:
    z = pop.satisfaction
    nps_owner, nps_time = sample_times(pop.life, window, np.full(pop.n, 1 / 120), rng)
    nps_score = np.clip(np.round(7.4 + 1.8 * z[nps_owner] + rng.normal(0, 1.2, len(nps_owner))), 0, 10)
    asked = np.flatnonzero(resolved & (rng.random(len(resolved)) < 0.35))
    csat_time = resolved_at[asked] + (rng.uniform(1, 48, len(asked)) * US_PER_HOUR).astype(np.int64)
    in_window = csat_time < window.end
    asked, csat_time = asked[in_window], csat_time[in_window]
    csat_owner = ticket_owner[asked]
    csat_score = np.clip(np.round(3.6 + 0.7 * z[csat_owner] + rng.normal(0, 0.7, len(asked))), 1, 5)
    owner = np.concatenate([nps_owner, csat_owner])
    time = np.concatenate([nps_time, csat_time])
    kind = np.concatenate([np.full(len(nps_owner), NPS), np.full(len(asked), CSAT)])
    score = np.concatenate([nps_score, csat_score]).astype(np.int64)
    ticket = np.concatenate([np.full(len(nps_owner), -1), asked])
    order = np.argsort(time, kind="stable")
    owner, time, kind, score, ticket = owner[order], time[order], kind[order], score[order], ticket[order]
    n = len(owner)
    # Low, middle and high scores get matching comments; most people leave none.
    band = np.where(kind == NPS, np.digitize(score, [7, 9]), np.digitize(score, [3, 5]))
    comments = (vocab.COMMENTS_LOW, vocab.COMMENTS_MID, vocab.COMMENTS_HIGH)
    flat_comments = [c for group in comments for c in group]
    band_start = np.cumsum([0] + [len(group) for group in comments])[:-1]
    comment = band_start[band] + rng.integers(0, 100, n) % np.array([len(g) for g in comments])[band]
    commented = rng.random(n) < 0.3
    email_style = email_styles(rng, n)

    def render(rows: np.ndarray) -> pa.Table:
        who = owner[rows]
        csat = kind[rows] == CSAT
        values = [
            padded_ids("R-", rows + 1, 8),
            pick(("nps-relationship", "csat-support"), kind[rows]),
            pick(("NPS", "CSAT"), kind[rows]),
            int_strings(score[rows]),
            where(commented[rows], pick(flat_comments, comment[rows])),
            spell_email(pop.email.take(pa.array(who)), email_style[rows]),
            where(csat, padded_ids("T-", np.maximum(ticket[rows], 0) + 1, 7)),
            int_strings(epoch(time[rows], US_PER_SECOND)),
        ]
        return pa.Table.from_arrays(values, names=list(SURVEY_COLUMNS))

    event = event_spec(
        "survey_answered",
        ["response_id"],
        {
            "occurred_at": timestamp("submitted_at"),
            "identifiers.email": "email",
            "payload.survey_id": "survey_id",
            "payload.kind": "kind",
            "payload.score": typed("score", "int"),
            "payload.comment": "comment",
            "payload.ticket_id": "ticket_id",
        },
        {"context.channel": "email"},
    )
    return Source(
        file="surveys.csv",
        person=owner,
        events={"survey_answered": np.ones(n, dtype=bool)},
        render=render,
        key="response_id",
        malformations=(
            bad_value("score", ("11",), "score 11 is outside the NPS 0-10 and CSAT 1-5 ranges"),
            bad_timestamp("submitted_at"),
            missing("survey_id"),
        ),
        mapping={"source": "surveys", "format": "csv", "events": [event]},
    )
