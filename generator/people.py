"""The synthetic customers: who they are, which systems know them, how they behave.

Every person has one true ``person_id`` (only ``ground_truth.csv`` reveals it) and separate ids
in each source system (web user id, shop customer id, CRM id, billing customer id), so identity
resolution has to link them through emails, phones and logins the way it would in real data.
Behaviour comes from a few skewed latent variables: ``satisfaction`` (drives churn, tickets,
NPS), ``engagement`` (web sessions per day) and ``order_rate``/``spend`` (gamma distributed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patron.generator import vocab
from patron.generator.textcols import choose, digit_matrix, from_matrix, hex_ids, join, padded_ids, pick
from patron.generator.timeline import Lifecycle, Window, sample_lifecycles

PHONE_STYLES = 4


@dataclass(frozen=True)
class Devices:
    """Browsers and app installs: person ``p`` owns devices ``offset[p] .. offset[p] + count[p] - 1``."""

    offset: np.ndarray
    count: np.ndarray
    is_app: np.ndarray
    anonymous_id: pa.Array
    device_id: pa.Array
    ip: pa.Array
    user_agent: np.ndarray


@dataclass(frozen=True)
class Population:
    """Per-person attributes, one array entry per person (index = person number)."""

    person_id: pa.Array
    first: np.ndarray
    last: np.ndarray
    german: np.ndarray
    company: np.ndarray
    title: np.ndarray
    city: np.ndarray
    email: pa.Array
    phone_area: np.ndarray
    phone_number: np.ndarray
    user_id: pa.Array
    shop_id: pa.Array
    crm_id: pa.Array
    billing_id: pa.Array
    web_account: np.ndarray
    shopper: np.ndarray
    in_crm: np.ndarray
    subscriber: np.ndarray
    email_optin: np.ndarray
    satisfaction: np.ndarray
    engagement: np.ndarray
    order_rate: np.ndarray
    spend: np.ndarray
    life: Lifecycle
    devices: Devices

    @property
    def n(self) -> int:
        return len(self.first)

    def company_name(self, who: np.ndarray, variant: np.ndarray | None = None) -> pa.Array:
        """Company of each person (null for consumers); ``variant`` 0 is canonical, 1.. the other spellings."""
        has = self.company[who] >= 0
        index = np.where(has, self.company[who], 0)
        canonical = pick([name for name, _, _ in vocab.COMPANIES], index)
        if variant is not None:
            spellings = [pick([c[2][k] for c in vocab.COMPANIES], index) for k in range(3)]
            canonical = choose(variant, canonical, *spellings)
        return pc.if_else(pa.array(has), canonical, pa.nulls(len(index), pa.string()))

    def phone(self, who: np.ndarray, home_region: str, style: np.ndarray) -> pa.Array:
        """Phone numbers as a source in ``home_region`` writes them, ``style`` 0-3 per row.

        Local people get any of four spellings, national ones included ("030 1234567",
        "(415) 555-0123"); people from the other country only the two international ones, so one
        default region per file is enough to normalise every number to the same E.164 value.
        """
        german = self.german[who]
        local = german if home_region == "DE" else ~german
        area_de = pick(vocab.AREA_CODES_DE, np.where(german, self.phone_area[who], 0))
        area_us = pick(vocab.AREA_CODES_US, np.where(german, 0, self.phone_area[who]))
        number = self.phone_number[who]
        subscriber = from_matrix(digit_matrix(number, 7))
        exchange = from_matrix(digit_matrix(number // 10_000, 3))
        line = from_matrix(digit_matrix(number % 10_000, 4))
        style = np.where(local, style, style % 2)  # foreigners: international styles 0 and 1 only
        de = [
            join("+49 ", area_de, " ", subscriber),
            join("+49", area_de, subscriber),
            join("0", area_de, " ", subscriber),
            join("0", area_de, "/", subscriber),
        ]
        us = [
            join("+1 ", area_us, " ", exchange, " ", line),
            join("+1", area_us, exchange, line),
            join("(", area_us, ") ", exchange, "-", line),
            join(area_us, "-", exchange, "-", line),
        ]
        return pc.if_else(pa.array(german), choose(style, *de), choose(style, *us))


def _emails(first: np.ndarray, last: np.ndarray, company: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """Unique lower-case addresses: a name-based local part, the person number, a work or freemail domain."""
    n = len(first)
    first_name = pc.utf8_lower(pick(vocab.FIRST_NAMES, first))
    last_name = pc.utf8_lower(pick(vocab.LAST_NAMES, last))
    number = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    local = choose(
        rng.integers(0, 3, size=n),
        join(first_name, ".", last_name, number),
        join(pc.utf8_slice_codeunits(first_name, 0, 1), last_name, number),
        join(first_name, "_", pc.utf8_slice_codeunits(last_name, 0, 1), number),
    )
    work = company >= 0
    domain = pc.if_else(
        pa.array(work),
        pick([domain for _, domain, _ in vocab.COMPANIES], np.where(work, company, 0)),
        pick(vocab.FREEMAIL_DOMAINS, rng.integers(0, len(vocab.FREEMAIL_DOMAINS), size=n)),
    )
    return join(local, "@", domain)


def _devices(n: int, web_account: np.ndarray, rng: np.random.Generator) -> Devices:
    """One to three devices per person; a quarter of them are app installs (those talk to the collector)."""
    count = 1 + rng.binomial(2, 0.25, size=n)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]])
    total = int(count.sum())
    owner = np.repeat(np.arange(n), count)
    is_app = (rng.random(total) < 0.25) & web_account[owner]
    octets = rng.integers(1, 255, size=(total, 4))
    ip = join(*[part for k in range(4) for part in (pc.cast(pa.array(octets[:, k]), pa.string()), ".")][:-1])
    return Devices(
        offset=offset,
        count=count,
        is_app=is_app,
        anonymous_id=hex_ids(rng, total, "anon-", 10),
        device_id=hex_ids(rng, total, "dev-", 8),
        ip=ip,
        user_agent=rng.integers(0, len(vocab.USER_AGENTS), size=total),
    )


def build_population(n: int, window: Window, rng: np.random.Generator) -> Population:
    """Draw ``n`` customers; the same ``rng`` state gives the same people."""
    german = rng.random(n) < 0.6
    first = rng.integers(0, len(vocab.FIRST_NAMES), size=n)
    last = rng.integers(0, len(vocab.LAST_NAMES), size=n)
    company = np.where(rng.random(n) < 0.35, rng.integers(0, len(vocab.COMPANIES), size=n), -1)
    satisfaction = rng.standard_normal(n)
    web_account = rng.random(n) < 0.65
    shopper = rng.random(n) < 0.75
    area_count = np.where(german, len(vocab.AREA_CODES_DE), len(vocab.AREA_CODES_US))
    # US numbers: exchange 200-999 then a 4-digit line; German subscriber numbers: 7 digits.
    phone_number = np.where(
        german, rng.integers(1_000_000, 9_999_999, size=n), rng.integers(2_000_000, 9_999_999, n)
    )
    cities = np.where(
        german, rng.integers(0, len(vocab.CITIES_DE), n), rng.integers(0, len(vocab.CITIES_US), n)
    )
    return Population(
        person_id=padded_ids("P", np.arange(1, n + 1), 7),
        first=first,
        last=last,
        german=german,
        company=company,
        title=rng.integers(0, len(vocab.TITLES), size=n),
        city=cities,
        email=_emails(first, last, company, rng),
        phone_area=(rng.random(n) * area_count).astype(np.int64),
        phone_number=phone_number,
        user_id=hex_ids(rng, n, "usr_", 6),
        shop_id=padded_ids("SC-", rng.permutation(n) + 1000, 7),
        crm_id=padded_ids("C-", rng.permutation(n) + 1, 7),
        billing_id=hex_ids(rng, n, "cus_", 7),
        web_account=web_account,
        shopper=shopper,
        in_crm=np.where(company >= 0, rng.random(n) < 0.9, rng.random(n) < 0.05),
        subscriber=rng.random(n) < 0.25,
        email_optin=rng.random(n) < 0.6,
        satisfaction=satisfaction,
        engagement=rng.gamma(0.8, 0.3 / 0.8, size=n) * np.exp(0.2 * satisfaction),
        order_rate=np.where(
            shopper, rng.gamma(1.2, (1 / 45) / 1.2, size=n) * np.exp(0.15 * satisfaction), 0.0
        ),
        spend=rng.lognormal(0.0, 0.5, size=n),
        life=sample_lifecycles(n, window, satisfaction, rng),
        devices=_devices(n, web_account, rng),
    )
