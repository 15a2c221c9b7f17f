"""The two Segment-shaped files: ``web_events.jsonl`` (browser export) and ``collector_batch.jsonl``.

Browser events are exported with their properties lifted to the top level (one flat JSON object
per line, the way warehouse exports of Segment tracks look); app events are kept as genuine
Segment HTTP API messages (``track``/``page``/``identify`` with nested ``properties``,
``traits`` and ``context``) to be posted to the collector. Both share the property rendering.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patron.generator import vocab
from patron.generator.activity import CART, EVENT_TYPES, FEATURE, LOGIN, PAGE, PRODUCT, Activity
from patron.generator.dirt import bad_timestamp, missing, spell_email
from patron.generator.jsonl import members_field, raw_field
from patron.generator.mappings import event_spec
from patron.generator.people import Population
from patron.generator.products import basket_cents, basket_json, basket_rows, product_members
from patron.generator.source import TRUNCATED_LINE, Source
from patron.generator.textcols import hashed_ids, join, money, pick, where
from patron.generator.timefmt import format_times

IDENTIFY = 5
# Segment spec names the collector maps to typed events; feature use has none, so the Patron name is used.
SEGMENT_EVENTS = ("", "Product Viewed", "Cart Viewed", "Signed In", "feature_used")
ISO_MILLIS = "%Y-%m-%dT%H:%M:%S.%LZ"
MAX_COUNT = 9


def _members(values: dict[str, object]) -> str:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)[1:-1]


# Exports carry name and category among the properties; Segment page calls have them at the top level.
PAGE_MEMBERS = [
    _members({"path": path, "url": vocab.SITE + path, "title": title, "category": category, "name": name})
    for path, title, category, name in vocab.PAGES
]
SEGMENT_PAGE_MEMBERS = [
    _members({"path": p, "url": vocab.SITE + p, "title": t}) for p, t, _, _ in vocab.PAGES
]
REFERRER_MEMBERS = [_members({"referrer": referrer}) for referrer in vocab.REFERRERS]
CAMPAIGN_MEMBERS = [
    _members({"utm_campaign": name, "utm_source": source, "utm_medium": medium})
    for name, source, medium in vocab.CAMPAIGNS
]
PRODUCT_MEMBERS = product_members("EUR") + product_members("USD")
FEATURE_MEMBERS = [_members({"feature": f, "count": c}) for f in vocab.FEATURES for c in range(MAX_COUNT + 1)]
LOGIN_MEMBERS = [_members({"method": m, "mfa": mfa}) for m in vocab.LOGIN_METHODS for mfa in (False, True)]


def _by_kind(kinds: np.ndarray, builders: dict[int, Callable[[np.ndarray], pa.Array]]) -> pa.Array:
    """Build each row with the builder of its kind (each on its own rows), back in row order.

    Rows of a kind without a builder stay null.
    """
    pieces, positions = [], []
    for kind, build in builders.items():
        rows = np.flatnonzero(kinds == kind)
        if len(rows):
            pieces.append(build(rows))
            positions.append(rows)
    if not pieces:
        return pa.nulls(len(kinds), pa.string())
    placed = np.concatenate(positions)
    inverse = np.full(len(kinds), -1, dtype=np.int64)
    inverse[placed] = np.arange(len(placed))
    return pa.concat_arrays([piece.cast(pa.string()) for piece in pieces]).take(
        pa.array(inverse, mask=inverse < 0)
    )


class Properties:
    """Renders the type-specific properties of events (as JSON members, without braces).

    ``segment`` selects the Segment spec's property names (``products`` for cart lines, no email
    on a login: the identify call carries it) over the warehouse export's.
    """

    def __init__(self, act: Activity, pop: Population, salt: int, segment: bool):
        self.act, self.pop, self.salt, self.segment = act, pop, salt, segment

    def currency(self, rows: np.ndarray) -> np.ndarray:
        return np.where(self.pop.german[self.act.person[rows]], 0, 1)

    def page(self, rows: np.ndarray) -> pa.Array:
        act = self.act
        parts = [pick(SEGMENT_PAGE_MEMBERS if self.segment else PAGE_MEMBERS, act.page[rows])]
        optional = [(REFERRER_MEMBERS, act.referrer[rows])]
        if not self.segment:
            optional.append((CAMPAIGN_MEMBERS, act.campaign[rows]))
        for table, index in optional:
            parts.append(where(index >= 0, join(",", pick(table, np.maximum(index, 0)))))
        return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")

    def product(self, rows: np.ndarray) -> pa.Array:
        return pick(PRODUCT_MEMBERS, self.act.product[rows] + len(vocab.PRODUCTS) * self.currency(rows))

    def cart(self, rows: np.ndarray) -> pa.Array:
        act = self.act
        carts = act.cart[rows]
        items, counts = basket_rows(act.basket_counts, carts)
        products, quantities = act.basket_products[items], act.basket_quantities[items]
        currency = pick(("EUR", "USD"), self.currency(rows))
        return join(
            '"cart_id":"',
            hashed_ids("cart_", carts, self.salt),
            '","products":' if self.segment else '","items":',
            basket_json(counts, products, quantities),
            ',"value":',
            money(basket_cents(counts, products, quantities)),
            ',"currency":"',
            currency,
            '"',
        )

    def login(self, rows: np.ndarray) -> pa.Array:
        act = self.act
        members = pick(LOGIN_MEMBERS, act.method[rows] * 2 + act.mfa[rows])
        if self.segment:
            return members
        email = spell_email(self.pop.email.take(pa.array(act.person[rows])), act.email_style[rows])
        return join(members, ',"email":"', email, '"')

    def feature(self, rows: np.ndarray) -> pa.Array:
        return pick(FEATURE_MEMBERS, self.act.feature[rows] * (MAX_COUNT + 1) + self.act.count[rows])

    def render(self, rows: np.ndarray, kinds: np.ndarray) -> pa.Array:
        return _by_kind(
            kinds,
            {
                PAGE: lambda r: self.page(rows[r]),
                PRODUCT: lambda r: self.product(rows[r]),
                CART: lambda r: self.cart(rows[r]),
                LOGIN: lambda r: self.login(rows[r]),
                FEATURE: lambda r: self.feature(rows[r]),
            },
        )


def _device_members(pop: Population) -> pa.Array:
    """Per device: the anonymous id and the client context a browser sends (flat keys)."""
    devices = pop.devices
    owner = np.repeat(np.arange(pop.n), devices.count)
    locale = pick(("en-US", "de-DE"), pop.german[owner].astype(np.int64))
    return join(
        '"anonymousId":"',
        devices.anonymous_id,
        '","ip":"',
        devices.ip,
        '","userAgent":"',
        pick(vocab.USER_AGENTS, devices.user_agent),
        '","locale":"',
        locale,
        '"',
    )


def _app_context(pop: Population) -> pa.Array:
    """Per device: the Segment ``context`` object an app sends (device id, app, library, locale)."""
    devices = pop.devices
    owner = np.repeat(np.arange(pop.n), devices.count)
    android = devices.user_agent % 2
    return join(
        '{"ip":"',
        devices.ip,
        '","userAgent":"',
        pick(vocab.APP_USER_AGENTS, android),
        '","locale":"',
        pick(("en-US", "de-DE"), pop.german[owner].astype(np.int64)),
        '","device":{"id":"',
        devices.device_id,
        '","type":"',
        pick(("ios", "android"), android),
        '"},"library":{"name":"',
        pick(("analytics-ios", "analytics-android"), android),
        '","version":"4.1.7"}}',
    )


WEB_SCHEMA = pa.schema(
    [
        pa.field("messageId", pa.string()),
        pa.field("timestamp", pa.string()),
        members_field("kind"),
        members_field("device"),
        pa.field("userId", pa.string()),
        members_field("properties"),
    ]
)


def web_events(act: Activity, pop: Population, salt: int) -> Source:
    """Browser events, one flat Segment-like JSON object per line."""
    properties = Properties(act, pop, salt, segment=False)
    device_members = _device_members(pop)
    kind_members = [
        _members({"type": "page"} if k == PAGE else {"type": "track", "event": SEGMENT_EVENTS[k]})
        for k in range(len(EVENT_TYPES))
    ]

    def render(rows: np.ndarray) -> pa.Table:
        kinds = act.kind[rows]
        user = pop.user_id.take(pa.array(act.person[rows]))
        columns = [
            hashed_ids("ajs-", rows, salt),
            format_times(act.time[rows], ISO_MILLIS),
            pick(kind_members, kinds),
            device_members.take(pa.array(act.device[rows])),
            where(act.identified[rows], user),
            properties.render(rows, kinds),
        ]
        return pa.Table.from_arrays(columns, schema=WEB_SCHEMA)

    common = {
        "occurred_at": "timestamp",
        "identifiers.anonymous_id": "anonymousId",
        "identifiers.user_id": "userId",
        "context.ip": "ip",
        "context.user_agent": "userAgent",
        "context.locale": "locale",
    }
    payload = {
        "page_viewed": ("path", ["url", "path", "title", "referrer", "name", "category"]),
        "product_viewed": (
            "product_id",
            ["product_id", "sku", "name", "category", "price", "currency", "url"],
        ),
        "cart_updated": ("cart_id", ["cart_id", "value", "currency"]),
        "logged_in": ("method", ["method", "mfa"]),
        "feature_used": ("feature", ["feature", "count"]),
    }
    events = []
    for event_type, (when, columns) in payload.items():
        specific = {f"payload.{column}": column for column in columns}
        if event_type == "page_viewed":
            specific |= {f"context.campaign.{key}": f"utm_{key}" for key in ("source", "medium")}
            specific["context.campaign.name"] = "utm_campaign"
        if event_type == "cart_updated":
            specific["payload.items"] = "items"  # already a JSON array in the line
        if event_type == "logged_in":
            specific["identifiers.email"] = "email"
        events.append(
            event_spec(event_type, ["messageId"], common | specific, {"context.channel": "web"}, when)
        )
    mapping = {"source": "web", "format": "jsonl", "timezone": "UTC", "events": events}
    return Source(
        file="web_events.jsonl",
        person=act.person,
        events={event_type: act.kind == k for k, event_type in enumerate(EVENT_TYPES)},
        render=render,
        key="messageId",
        malformations=(TRUNCATED_LINE, bad_timestamp("timestamp")),
        mapping=mapping,
    )


COLLECTOR_SCHEMA = pa.schema(
    [
        pa.field("messageId", pa.string()),
        pa.field("type", pa.string()),
        pa.field("event", pa.string()),
        pa.field("name", pa.string()),
        pa.field("category", pa.string()),
        pa.field("userId", pa.string()),
        pa.field("anonymousId", pa.string()),
        pa.field("timestamp", pa.string()),
        raw_field("properties"),
        raw_field("traits"),
        raw_field("context"),
    ]
)


def collector_batch(act: Activity, pop: Population, salt: int) -> Source:
    """App events as Segment HTTP API messages, plus an ``identify`` after every login."""
    logins = np.flatnonzero(act.kind == LOGIN)
    rows = np.concatenate([np.arange(len(act.kind)), logins])
    kind = np.concatenate([act.kind, np.full(len(logins), IDENTIFY)])
    time = np.concatenate([act.time, act.time[logins] + 1000])
    order = np.argsort(time, kind="stable")
    rows, kind, time = rows[order], kind[order], time[order]
    properties = Properties(act, pop, salt, segment=True)
    context = _app_context(pop)
    types = ("page", "track", "track", "track", "track", "identify")

    def traits(event_rows: np.ndarray) -> pa.Array:
        person = act.person[event_rows]
        email = spell_email(pop.email.take(pa.array(person)), act.email_style[event_rows])
        first = pick(vocab.FIRST_NAMES, pop.first[person])
        last = pick(vocab.LAST_NAMES, pop.last[person])
        return join('{"email":"', email, '","firstName":"', first, '","lastName":"', last, '"}')

    def render(records: np.ndarray) -> pa.Table:
        event_rows, kinds = rows[records], kind[records]
        person = act.person[event_rows]
        track = (kinds != IDENTIFY) & (kinds != PAGE)
        is_identify = kinds == IDENTIFY
        props = properties.render(event_rows, np.where(is_identify, -1, kinds))
        page = act.page[event_rows]
        is_page = kinds == PAGE
        columns = [
            hashed_ids("", records, salt),
            pick(types, kinds),
            where(track, pick(SEGMENT_EVENTS, np.where(track, kinds, 0))),
            where(is_page, pick([name for *_, name in vocab.PAGES], page)),
            where(is_page, pick([category for _, _, category, _ in vocab.PAGES], page)),
            where(act.identified[event_rows] | is_identify, pop.user_id.take(pa.array(person))),
            pop.devices.anonymous_id.take(pa.array(act.device[event_rows])),
            format_times(time[records], ISO_MILLIS),
            join("{", props, "}"),
            _by_kind(np.where(is_identify, IDENTIFY, -1), {IDENTIFY: lambda r: traits(event_rows[r])}),
            context.take(pa.array(act.device[event_rows])),
        ]
        return pa.Table.from_arrays(columns, schema=COLLECTOR_SCHEMA)

    event_types = dict(enumerate(EVENT_TYPES)) | {IDENTIFY: "identify"}
    return Source(
        file="collector_batch.jsonl",
        person=act.person[rows],
        events={name: kind == k for k, name in event_types.items()},
        render=render,
        key="messageId",
        malformations=(TRUNCATED_LINE, bad_timestamp("timestamp"), missing("userId", "anonymousId")),
        mapping=None,
        connector="segment",
    )
