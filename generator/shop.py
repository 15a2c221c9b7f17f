"""``shop_orders.csv``: the web shop's order export, one row per order with its refund, if any.

Written the way a German shop system exports: local wall-clock times (Europe/Berlin) in
``dd.mm.yyyy`` form, phone numbers as customers typed them, emails with stray capitals and
spaces, and the basket as JSON text in one cell. Customers are keyed by the shop's own id.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from patron.generator import vocab
from patron.generator.dirt import bad_number, bad_timestamp, email_styles, missing, spell_email
from patron.generator.mappings import event_spec, timestamp, typed
from patron.generator.people import PHONE_STYLES, Population
from patron.generator.products import basket_cents, basket_json, basket_rows, draw_baskets
from patron.generator.source import Source
from patron.generator.textcols import hashed_ids, money, padded_ids, pick, where
from patron.generator.timefmt import US_PER_DAY, format_times
from patron.generator.timeline import Window, sample_times

LOCAL_FORMAT = "%d.%m.%Y %H:%M:%S"
ZONE = "Europe/Berlin"
COUPON_PERCENT = np.array([10, 15, 20])
FREE_SHIPPING_FROM = 5000
SHIPPING_CENTS = 495
COLUMNS = ("order_id", "customer_id", "email", "phone", "ordered_at", "currency", "total", "tax", "shipping",
           "discount", "coupon", "items", "refund_id", "refunded_at", "refund_amount", "refund_reason")  # fmt: skip


def shop_orders(pop: Population, window: Window, rng: np.random.Generator, salt: int) -> Source:
    owner, ordered = sample_times(pop.life, window, pop.order_rate, rng)
    n = len(owner)
    counts, products, quantities = draw_baskets(rng, n, 0.3 + 0.6 * pop.spend[owner])
    subtotal = basket_cents(counts, products, quantities)
    coupon = np.where(rng.random(n) < 0.1, rng.integers(0, len(vocab.COUPONS), n), -1)
    discount = np.where(coupon >= 0, subtotal * COUPON_PERCENT[np.maximum(coupon, 0)] // 100, 0)
    shipping = np.where(subtotal >= FREE_SHIPPING_FROM, 0, SHIPPING_CENTS)
    total = subtotal - discount + shipping
    german = pop.german[owner]
    tax = np.where(german, total * 19 // 119, total * 8 // 108)
    # Unhappy customers send more back.
    refund_share = 0.04 + 0.06 * (pop.satisfaction[owner] < -1)
    refunded_at = ordered + ((2 + rng.exponential(6, n)) * US_PER_DAY).astype(np.int64)
    refunded = (rng.random(n) < refund_share) & (refunded_at < window.end)
    full_refund = rng.random(n) < 0.6
    refund_amount = np.where(full_refund, total, np.minimum(total, subtotal // np.maximum(counts, 1)))
    has_email = rng.random(n) > 0.03
    has_phone = rng.random(n) < 0.6
    email_style = email_styles(rng, n)
    phone_style = rng.integers(0, PHONE_STYLES, size=n)
    reason = rng.integers(0, len(vocab.REFUND_REASONS), size=n)

    def render(rows: np.ndarray) -> pa.Table:
        who = owner[rows]
        items, item_counts = basket_rows(counts, rows)
        is_refund = refunded[rows]
        values = [
            padded_ids("O-", rows + 100_000, 8),
            pop.shop_id.take(pa.array(who)),
            where(has_email[rows], spell_email(pop.email.take(pa.array(who)), email_style[rows])),
            where(has_phone[rows], pop.phone(who, "DE", phone_style[rows])),
            format_times(ordered[rows], LOCAL_FORMAT, ZONE),
            pick(("USD", "EUR"), german[rows].astype(np.int64)),
            money(total[rows]),
            money(tax[rows]),
            money(shipping[rows]),
            where(coupon[rows] >= 0, money(discount[rows])),
            where(coupon[rows] >= 0, pick(vocab.COUPONS, np.maximum(coupon[rows], 0))),
            basket_json(item_counts, products[items], quantities[items]),
            where(is_refund, hashed_ids("re_", rows, salt)),
            where(is_refund, format_times(refunded_at[rows], LOCAL_FORMAT, ZONE)),
            where(is_refund, money(refund_amount[rows])),
            where(is_refund, pick(vocab.REFUND_REASONS, reason[rows])),
        ]
        return pa.Table.from_arrays(values, names=list(COLUMNS))

    ids = {
        "identifiers.email": "email",
        "identifiers.phone": "phone",
        "identifiers.external_ids.shop_customer_id": "customer_id",
        "payload.order_id": "order_id",
        "payload.currency": "currency",
    }
    order = event_spec(
        "order_completed",
        ["order_id"],
        {"occurred_at": timestamp("ordered_at", LOCAL_FORMAT)}
        | ids
        | {
            "payload.revenue": typed("total", "float"),
            "payload.tax": typed("tax", "float"),
            "payload.shipping": typed("shipping", "float"),
            "payload.discount": typed("discount", "float"),
            "payload.coupon": "coupon",
            "payload.items": typed("items", "json"),
        },
        {"context.channel": "web"},
    )
    refund = event_spec(
        "refund_issued",
        ["refund_id"],
        {"occurred_at": timestamp("refunded_at", LOCAL_FORMAT)}
        | ids
        | {
            "payload.refund_id": "refund_id",
            "payload.amount": typed("refund_amount", "float"),
            "payload.reason": "refund_reason",
        },
        {"context.channel": "web"},
        when="refunded_at",
    )
    return Source(
        file="shop_orders.csv",
        person=owner,
        events={"order_completed": np.ones(n, dtype=bool), "refund_issued": refunded},
        render=render,
        key="order_id",
        malformations=(bad_timestamp("ordered_at"), bad_number("total"), missing("order_id")),
        mapping={
            "source": "shop",
            "format": "csv",
            "default_region": "DE",
            "timezone": ZONE,
            "events": [order, refund],
        },
    )
