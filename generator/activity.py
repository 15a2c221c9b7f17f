"""Web and app behaviour: sessions of page views, product views, cart updates, logins, feature use.

Sessions arrive at each customer's ``engagement`` rate while they are active. A device stays
anonymous (only its ``anonymous_id``) until someone logs in on it; from the login on, every
event of that device also carries the user id, which is how Segment-style trackers behave and
what identity resolution has to stitch together.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from patron.generator import vocab
from patron.generator.dirt import email_styles
from patron.generator.people import Population
from patron.generator.products import draw_baskets, draw_products
from patron.generator.timeline import Window, categorical, sample_times

PAGE, PRODUCT, CART, LOGIN, FEATURE = range(5)
EVENT_TYPES = ("page_viewed", "product_viewed", "cart_updated", "logged_in", "feature_used")
# Share of each kind among the events after a session's first page view (logins are placed apart).
KIND_SHARES = {PAGE: 0.45, PRODUCT: 0.33, CART: 0.10, FEATURE: 0.12}
MEAN_GAP_US = 45_000_000


@dataclass(frozen=True)
class Activity:
    """One entry per event, in time order; ``cart`` indexes the baskets (-1 for other kinds)."""

    person: np.ndarray
    device: np.ndarray
    time: np.ndarray
    kind: np.ndarray
    identified: np.ndarray
    page: np.ndarray
    referrer: np.ndarray
    campaign: np.ndarray
    product: np.ndarray
    feature: np.ndarray
    count: np.ndarray
    method: np.ndarray
    mfa: np.ndarray
    email_style: np.ndarray
    cart: np.ndarray
    basket_counts: np.ndarray
    basket_products: np.ndarray
    basket_quantities: np.ndarray

    def subset(self, rows: np.ndarray) -> Activity:
        """The events ``rows`` (baskets are shared, ``cart`` keeps pointing into them)."""
        basket = {"basket_counts", "basket_products", "basket_quantities"}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Activity(**{name: value if name in basket else value[rows] for name, value in values.items()})


def _identified(device: np.ndarray, time: np.ndarray, login: np.ndarray, devices: int) -> np.ndarray:
    """True from the first login on each device onwards."""
    first_login = np.full(devices, np.iinfo(np.int64).max)
    np.minimum.at(first_login, device[login], time[login])
    return time >= first_login[device]


def simulate_activity(pop: Population, window: Window, rng: np.random.Generator) -> Activity:
    """Every web and app event of the window, vectorised over sessions and events."""
    owner, start = sample_times(pop.life, window, pop.engagement, rng)
    sessions = len(owner)
    device = pop.devices.offset[owner] + (rng.random(sessions) * pop.devices.count[owner]).astype(np.int64)
    length = rng.geometric(0.28, size=sessions)
    logs_in = pop.web_account[owner] & (rng.random(sessions) < 0.3)
    session = np.repeat(np.arange(sessions), length)
    first = np.concatenate([[0], np.cumsum(length)[:-1]])
    position = np.arange(len(session)) - first[session]
    gaps = rng.exponential(MEAN_GAP_US, size=len(session)).astype(np.int64)
    gaps[position == 0] = 0
    elapsed = np.cumsum(gaps)
    time = start[session] + elapsed - elapsed[first][session]
    kinds = np.array(list(KIND_SHARES))
    shares = np.array(list(KIND_SHARES.values()))
    kind = kinds[categorical(rng, shares, len(session))]
    kind[position == 0] = PAGE
    kind[logs_in[session] & (position == np.minimum(1, length - 1)[session])] = LOGIN
    person = owner[session]
    device = device[session]
    identified = _identified(device, time, kind == LOGIN, len(pop.devices.is_app))
    # Product features are used by logged-in customers; anonymous visitors browse instead.
    kind[(kind == FEATURE) & ~identified] = PAGE
    keep = time < window.end
    order = np.flatnonzero(keep)[np.argsort(time[keep], kind="stable")]
    n = len(order)
    is_cart = kind[order] == CART
    basket_counts, basket_products, basket_quantities = draw_baskets(rng, int(is_cart.sum()), 0.7)
    cart = np.full(n, -1, dtype=np.int64)
    cart[is_cart] = np.arange(int(is_cart.sum()))
    first_page = position[order] == 0
    return Activity(
        person=person[order],
        device=device[order],
        time=time[order],
        kind=kind[order],
        identified=identified[order],
        page=categorical(rng, 1.0 / np.arange(1.0, len(vocab.PAGES) + 1), n),
        referrer=np.where(first_page & (rng.random(n) < 0.4), rng.integers(0, len(vocab.REFERRERS), n), -1),
        campaign=np.where(first_page & (rng.random(n) < 0.12), rng.integers(0, len(vocab.CAMPAIGNS), n), -1),
        product=draw_products(rng, n),
        feature=rng.integers(0, len(vocab.FEATURES), size=n),
        count=1 + np.minimum(rng.poisson(1.2, size=n), 8),
        method=rng.integers(0, len(vocab.LOGIN_METHODS), size=n),
        mfa=rng.random(n) < 0.3,
        email_style=email_styles(rng, n),
        cart=cart,
        basket_counts=basket_counts,
        basket_products=basket_products,
        basket_quantities=basket_quantities,
    )
