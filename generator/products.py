"""The product catalogue as arrays, and baskets of line items rendered as JSON text.

Carts (web events) and orders (shop export) both carry lists of ``patron.common.LineItem``;
each (product, quantity) pair is rendered once and baskets are joined from those pieces.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patron.generator import vocab
from patron.generator.textcols import join, pick
from patron.generator.timeline import categorical

MAX_QUANTITY = 3
PRICE_CENTS = np.array([price for *_, price in vocab.PRODUCTS], dtype=np.int64)
# A long tail: the first products sell far more often than the last ones.
POPULARITY = 1.0 / (np.arange(len(vocab.PRODUCTS)) + 1.5)


def _item_texts() -> list[str]:
    texts = []
    for product_id, sku, name, category, price in vocab.PRODUCTS:
        for quantity in range(1, MAX_QUANTITY + 1):
            item = {"product_id": product_id, "sku": sku, "name": name, "category": category}
            item |= {"quantity": quantity, "price": price / 100}
            texts.append(json.dumps(item, separators=(",", ":")))
    return texts


ITEM_TEXTS = _item_texts()


def draw_products(rng: np.random.Generator, n: int) -> np.ndarray:
    """Product indices following :data:`POPULARITY`."""
    return categorical(rng, POPULARITY, n)


def draw_baskets(
    rng: np.random.Generator, n: int, extra_items: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` baskets: items per basket (1 + Poisson), then product and quantity per item."""
    counts = 1 + np.minimum(rng.poisson(extra_items, size=n), 5)
    total = int(counts.sum())
    quantity = 1 + rng.binomial(MAX_QUANTITY - 1, 0.15, size=total)
    return counts, draw_products(rng, total), quantity


def basket_cents(counts: np.ndarray, product: np.ndarray, quantity: np.ndarray) -> np.ndarray:
    """Sum of price x quantity per basket, in cents."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(PRICE_CENTS[product] * quantity, starts) if len(counts) else np.zeros(0, np.int64)


def basket_json(counts: np.ndarray, product: np.ndarray, quantity: np.ndarray) -> pa.Array:
    """Each basket as a JSON array of line items, e.g. ``[{"product_id":"prd_1001",...}]``."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    items = pick(ITEM_TEXTS, product * MAX_QUANTITY + quantity - 1)
    lists = pa.ListArray.from_arrays(pa.array(offsets), items)
    return join("[", pc.binary_join(lists, ","), "]")


def basket_rows(counts: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The item rows of the baskets ``chosen`` and their item counts, to render a subset of baskets."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picked = counts[chosen]
    rows = np.repeat(starts[chosen] - np.concatenate([[0], np.cumsum(picked)[:-1]]), picked)
    return rows + np.arange(int(picked.sum())), picked


def product_members(currency: str) -> list[str]:
    """Per product, the ``product_viewed`` properties as JSON members (for a given currency)."""
    texts = []
    for product_id, sku, name, category, price in vocab.PRODUCTS:
        fields = {"product_id": product_id, "sku": sku, "name": name, "category": category}
        fields |= {"price": price / 100, "currency": currency, "url": f"{vocab.SITE}/products/{product_id}"}
        texts.append(json.dumps(fields, separators=(",", ":"))[1:-1])
    return texts
