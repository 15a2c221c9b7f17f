"""Segment (and RudderStack) spec messages -> Patron events: the pure mapping, no I/O.

Sources already instrumented with a Segment or RudderStack SDK should only need a new host
to send to Patron, so this module reads the Segment spec as it is sent (camelCase ids,
``context.*``, the e-commerce, B2B SaaS and email event names) and produces Avro-shaped
Patron events. The rules that decide where each part of a message ends up (see
``docs/collector.md`` for the user-facing table):

- Nothing a message says about the customer is dropped silently. A track call with a
  Segment spec name becomes the typed event, and every property the typed payload has no
  field for travels in a second, linked ``custom_event`` (the *companion*; that is why
  one message can give two events). Identify and group keep unmapped traits in their
  ``traits`` map. A track call that uses a Patron event type name (``order_completed``)
  speaks Patron's schema: its properties are the payload and an unknown key is refused.
- SDK metadata in ``context`` (library, os, screen, ...) is not a fact about the customer:
  ``context.library`` and the top-level ``channel`` only decide ``context.channel``
  (web/app/api); the other context keys not listed in the docs are not stored.
- Top-level message fields are checked against the Segment spec, so a typo such as
  ``userID`` is refused instead of losing the user id.

Leaf types (strings, numbers, emails, phones) are not checked here: the pipeline validates
the produced event against its Avro schema and names the offending field.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson

from patron.schemas.catalogue import default_catalogue

SEGMENT_NAMESPACE = uuid.UUID("0b7c2f86-5d0e-4b9a-a3f3-61c1d2e8a917")
"""Namespace of the uuid5 event ids made from non-UUID message ids (``ajs-...``) and companions."""

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
COMMON_FIELDS = frozenset(
    {
        "type",
        "messageId",
        "userId",
        "anonymousId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "context",
        "integrations",
        "channel",
        "version",
        "writeKey",
        "options",
        "_metadata",
        "rudderId",
        "request_ip",
    }
)
TYPE_FIELDS: dict[str, frozenset[str]] = {
    "track": frozenset({"event", "properties"}),
    "identify": frozenset({"traits"}),
    "page": frozenset({"name", "category", "properties"}),
    "screen": frozenset({"name", "category", "properties"}),
    "group": frozenset({"groupId", "traits"}),
    "alias": frozenset({"previousId"}),
}
CHANNELS = {"web": "web", "browser": "web", "mobile": "app", "server": "api"}
APP_LIBRARIES = ("ios", "android", "react-native", "flutter", "swift", "kotlin", "xamarin")
WEB_LIBRARIES = (".js", "javascript", "browser")
CAMPAIGN_FIELDS = ("name", "source", "medium", "term", "content")
COMPANION_ID_KEY = "$event_id"
COMPANION_TYPE_KEY = "$event_type"


class SegmentError(ValueError):
    """A message that is not a well-formed Segment message; the text names the field and the fix."""


@dataclass(frozen=True)
class Mapped:
    """A message's typed payload, and what it had no field for (``name`` names the companion)."""

    event_type: str
    payload: dict[str, Any]
    leftovers: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class SpecEvent:
    """How one Segment spec track event maps onto a Patron event type.

    ``fields`` maps each payload field to the Segment properties that can fill it, in order
    of preference: the first one present wins, and a later one present too is *not* used
    (it travels in the companion, since e.g. Segment's ``total`` and ``revenue`` differ).
    """

    event_type: str
    fields: Mapping[str, tuple[str, ...]]
    products: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


EMAIL_FIELDS = {
    "message_id": ("email_id", "message_id"),
    "subject": ("email_subject", "subject"),
    "campaign_id": ("campaign_id",),
    "list_id": ("list_id",),
}
LINE_ITEM_FIELDS = {
    "product_id": ("product_id", "id"),
    "sku": ("sku",),
    "name": ("name",),
    "category": ("category",),
    "quantity": ("quantity",),
    "price": ("price",),
}

SPEC_EVENTS: dict[str, SpecEvent] = {
    "Order Completed": SpecEvent(
        "order_completed",
        {
            "order_id": ("order_id",),
            "revenue": ("revenue", "total"),
            "currency": ("currency",),
            "tax": ("tax",),
            "shipping": ("shipping",),
            "discount": ("discount",),
            "coupon": ("coupon",),
        },
        products="items",
    ),
    "Order Refunded": SpecEvent(
        "refund_issued",
        {
            "order_id": ("order_id",),
            "refund_id": ("refund_id",),
            "amount": ("total", "revenue", "value", "amount"),
            "currency": ("currency",),
            "reason": ("reason",),
        },
    ),
    "Product Viewed": SpecEvent(
        "product_viewed",
        {
            "product_id": ("product_id", "id"),
            "sku": ("sku",),
            "name": ("name",),
            "category": ("category",),
            "brand": ("brand",),
            "price": ("price",),
            "currency": ("currency",),
            "url": ("url",),
        },
    ),
    "Cart Viewed": SpecEvent(
        "cart_updated",
        {"cart_id": ("cart_id",), "value": ("value", "total", "revenue"), "currency": ("currency",)},
        products="items",
    ),
    # The spec's Signed In names no method (only a username), but the fact that matters, a login, is
    # kept typed: the method is recorded as unspecified rather than refusing spec-conforming calls.
    "Signed In": SpecEvent(
        "logged_in", {"method": ("method", "type"), "mfa": ("mfa",)}, defaults={"method": "unspecified"}
    ),
    "Email Delivered": SpecEvent("email_sent", EMAIL_FIELDS),
    "Email Sent": SpecEvent("email_sent", EMAIL_FIELDS),
    "Email Opened": SpecEvent("email_opened", EMAIL_FIELDS),
    "Email Link Clicked": SpecEvent("email_clicked", {**EMAIL_FIELDS, "url": ("link_url", "url")}),
    "Unsubscribed": SpecEvent("email_unsubscribed", {**EMAIL_FIELDS, "reason": ("reason",)}),
    "Email Unsubscribed": SpecEvent("email_unsubscribed", {**EMAIL_FIELDS, "reason": ("reason",)}),
}
"""Segment spec event names (e-commerce, B2B SaaS, email) that have a Patron event type.

Not mapped, on purpose, so they stay ``custom_event``: "Product Added"/"Product Removed" (a
delta, while ``cart_updated`` is a snapshot of the whole cart), "Checkout Started" (no cart
id; an intent, not a cart change), "Signed Up", "Trial Started" and the rest of the spec.
"""

PAGE_FIELDS = {"url": ("url",), "path": ("path",), "title": ("title",), "referrer": ("referrer",)}
IDENTIFY_FIELDS = {
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "name": ("name",),
    "title": ("title",),
    "city": ("city",),
    "country": ("country",),
    "birthday": ("birthday",),
    "created_at": ("createdAt", "created_at"),
}
GROUP_FIELDS = {
    "name": ("name",),
    "industry": ("industry",),
    "employees": ("employees",),
    "plan": ("plan",),
}
ADDRESS_PARTS = ("street", "postalCode", "city", "state", "country")


def segment_to_events(
    message: Any,
    source: str,
    *,
    received_at: datetime | None = None,
    sent_at: Any = None,
    external_id_traits: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The Patron events for one Segment message: the mapped event, plus its companion if any.

    ``sent_at`` is the batch-level ``sentAt`` (a message's own ``sentAt`` wins);
    ``external_id_traits`` names traits that are ids in other systems (``crm_id``) and go to
    ``identifiers.external_ids``. Raises :class:`SegmentError` for a malformed message.
    """
    if not isinstance(message, dict):
        raise SegmentError(f"a message must be a JSON object, got {_kind(message)}")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in TYPE_FIELDS:  # a list or object is unhashable
        raise SegmentError(
            f"type: {kind!r} is not a Segment message type; use one of {', '.join(MESSAGE_TYPES)}"
        )
    unknown = sorted(set(message) - COMMON_FIELDS - TYPE_FIELDS[kind])
    if unknown:
        raise SegmentError(
            f"{unknown[0]}: unknown field for a {kind} message (put custom data in properties or traits)"
        )
    if _blank(message.get("userId")) and _blank(message.get("anonymousId")):
        raise SegmentError("userId or anonymousId is required (Segment rule: every message names its user)")
    received = received_at or datetime.now(UTC)
    context = _object(message, "context")
    traits = _object(message, "traits")
    if kind == "identify":
        traits = {**_object(context, "traits", "context.traits"), **traits}
    identifiers, consumed = _identifiers(
        message, context, traits if kind == "identify" else {}, external_id_traits
    )
    envelope = {
        "event_id": message_event_id(message, source),
        "occurred_at": _occurred_at(message, sent_at, received),
        "received_at": received,
        "source": source,
        "identifiers": identifiers,
        "context": _context(message, kind, context),
    }
    mapped = _payload(message, kind, context, {k: v for k, v in traits.items() if k not in consumed})
    events = [{"envelope": {**envelope, "event_type": mapped.event_type}, "payload": mapped.payload}]
    if mapped.leftovers:
        events.append(_companion(envelope, mapped))
    return events


# -- envelope ------------------------------------------------------------------------------------


def message_event_id(message: dict[str, Any], source: str) -> str:
    """A UUID ``messageId`` is the event id; any other is hashed with the source, so SDK retries dedupe."""
    message_id = message.get("messageId")
    if message_id is None:
        # No id at all: the content is the identity, so an identical retry is still a duplicate.
        body = orjson.dumps({k: v for k, v in message.items() if k != "sentAt"}, option=orjson.OPT_SORT_KEYS)
        return str(uuid.uuid5(SEGMENT_NAMESPACE, f"{source}\x00content\x00{body.hex()}"))
    if isinstance(message_id, bool) or not isinstance(message_id, str | int):
        raise SegmentError(f"messageId: expected a string, got {_kind(message_id)}")
    try:
        return str(uuid.UUID(str(message_id)))
    except ValueError:
        return str(uuid.uuid5(SEGMENT_NAMESPACE, f"{source}\x00{message_id}"))


def _occurred_at(message: dict[str, Any], batch_sent_at: Any, received: datetime) -> datetime:
    """Segment's clock-skew correction: ``receivedAt - (sentAt - timestamp)``.

    The device clock may be wrong, but the age of the event when it was sent
    (``sentAt - timestamp``, both read from that same clock) is right; subtracting it from
    Patron's own receive time gives the true time. Without ``sentAt`` the timestamp is used
    as sent, without any timestamp the receive time.
    """
    name = "originalTimestamp" if message.get("originalTimestamp") is not None else "timestamp"
    stamped = _time(message.get(name), name)
    if stamped is None:
        return received
    sent = _time(message.get("sentAt"), "sentAt") or _time(batch_sent_at, "sentAt")
    if sent is None:
        return stamped
    try:
        return received - (sent - stamped)
    except OverflowError:
        raise SegmentError(
            f"{name}/sentAt: they are so far apart that the corrected time is not a valid date"
        ) from None


def _time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SegmentError(f"{name}: expected an ISO-8601 time string, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SegmentError(
            f"{name}: {value[:40]!r} is not an ISO-8601 time (e.g. 2024-05-17T09:30:12.345Z)"
        ) from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a valid ISO time whose UTC is before year 1
        raise SegmentError(f"{name}: {value[:40]!r} is out of range once converted to UTC") from None


def _identifiers(
    message: dict[str, Any],
    context: dict[str, Any],
    traits: dict[str, Any],
    external_id_traits: Iterable[str],
) -> tuple[dict[str, Any], set[str]]:
    """The identifiers of the message, and which of ``traits`` were consumed as identifiers.

    ``traits`` are the identify call's traits (they win over ``context.traits``, which
    browser SDKs fill from their cached user); email, phone and the configured external id
    traits move from the traits into the identifiers.
    """
    cached = _object(context, "traits", "context.traits")
    device = _object(context, "device", "context.device")
    external: dict[str, Any] = {}
    ids = context.get("externalIds")
    if ids is not None:
        if not isinstance(ids, list) or not all(
            isinstance(i, dict) and "id" in i and "type" in i for i in ids
        ):
            raise SegmentError('context.externalIds: expected a list of {"id": ..., "type": ...} objects')
        external.update({str(i["type"]): i["id"] for i in ids})
    consumed: set[str] = set()
    for name in external_id_traits:
        for found in (cached, traits):
            if found.get(name) is not None:
                external[name] = found[name]
        if name in traits:
            consumed.add(name)
    picked = {}
    for name in ("email", "phone"):
        value = traits.get(name, cached.get(name))
        if name in traits:
            consumed.add(name)
        picked[name] = None if _blank(value) else value
    identifiers = {
        "user_id": message.get("userId"),
        "anonymous_id": message.get("anonymousId"),
        **picked,
        "device_id": device.get("id"),
    }
    return {**_without_nulls(identifiers), "external_ids": external}, consumed


def _context(message: dict[str, Any], kind: str, context: dict[str, Any]) -> dict[str, Any]:
    campaign = _object(context, "campaign", "context.campaign")
    utm = {name: campaign[name] for name in CAMPAIGN_FIELDS if campaign.get(name) is not None}
    mapped = {
        "channel": _channel(message, kind, context),
        "ip": context.get("ip"),
        "user_agent": context.get("userAgent"),
        "locale": context.get("locale"),
        "campaign": utm or None,
    }
    return _without_nulls(mapped)


def _channel(message: dict[str, Any], kind: str, context: dict[str, Any]) -> str | None:
    """web/app/api from RudderStack's ``channel`` or the SDK's ``context.library`` name."""
    declared = message.get("channel")
    if isinstance(declared, str) and declared.lower() in CHANNELS:
        return CHANNELS[declared.lower()]
    library = context.get("library")
    name = library.get("name") if isinstance(library, dict) else None
    if isinstance(name, str) and name:
        lowered = name.lower()
        if any(marker in lowered for marker in APP_LIBRARIES):
            return "app"
        if any(marker in lowered for marker in WEB_LIBRARIES):
            return "web"
        return "api"
    return "app" if kind == "screen" else None


# -- payloads ------------------------------------------------------------------------------------


def _payload(message: dict[str, Any], kind: str, context: dict[str, Any], traits: dict[str, Any]) -> Mapped:
    if kind == "track":
        return _track(message)
    if kind == "identify":
        return Mapped("identify", _identify(traits))
    if kind == "group":
        return Mapped("group", _group(message, traits))
    if kind == "alias":
        return Mapped("alias", _without_nulls({"previous_id": message.get("previousId")}))
    return _view(message, kind, context)


def _track(message: dict[str, Any]) -> Mapped:
    name = message.get("event")
    if not isinstance(name, str) or not name.strip():
        raise SegmentError(f"event: a track message needs the event name as a string, got {_kind(name)}")
    properties = _object(message, "properties")
    spec = SPEC_EVENTS.get(name)
    if spec is not None:
        payload, leftovers = _take(properties, spec.fields)
        payload = {**spec.defaults, **payload}
        if spec.products:
            payload[spec.products], leftovers = _line_items(leftovers)
        if spec.event_type == "cart_updated" and "value" not in payload:
            payload.update(_cart_value(payload["items"]))
        return Mapped(spec.event_type, payload, leftovers, name)
    if name in _direct_types():
        return Mapped(name, _without_nulls(properties))
    return Mapped("custom_event", {"name": name, "properties": _encoded(properties)})


@cache
def _direct_types() -> frozenset[str]:
    """Patron event type names a track call may use directly (its properties are the payload)."""
    return frozenset(default_catalogue().event_types()) - {"custom_event"}


def _view(message: dict[str, Any], kind: str, context: dict[str, Any]) -> Mapped:
    """page -> page_viewed (context.page fills what properties leave out), screen -> screen_viewed."""
    properties = _object(message, "properties")
    fields = {"name": ("name",), "category": ("category",)}
    if kind == "screen":
        fields["previous_screen"] = ("previous_screen",)
    else:
        fields.update(PAGE_FIELDS)
    payload, leftovers = _take(properties, fields)
    for name in ("name", "category"):
        top = message.get(name)
        if top is not None:
            if payload.get(name, top) != top:
                leftovers[name] = payload[name]  # both given and different: keep the property too
            payload[name] = top
    if kind == "page":
        page = _object(context, "page", "context.page")
        for name in PAGE_FIELDS:
            if payload.get(name) is None and page.get(name) is not None:
                payload[name] = page[name]
        search = leftovers.get("search")
        if search == "" or (isinstance(search, str) and search in str(payload.get("url") or "")):
            del leftovers["search"]  # already part of the url: nothing is lost
    return Mapped("screen_viewed" if kind == "screen" else "page_viewed", payload, leftovers, kind)


def _identify(traits: dict[str, Any]) -> dict[str, Any]:
    """Traits with a payload field fill it; the rest, JSON-encoded, fill ``traits``."""
    payload, rest = _take(traits, IDENTIFY_FIELDS)
    company = rest.pop("company", None)
    if isinstance(company, dict):
        payload["company"] = company.get("name")
        extra = {k: v for k, v in company.items() if k != "name"}
        if extra:
            rest["company"] = extra
    elif company is not None:
        payload["company"] = company
    address = rest.pop("address", None)
    if isinstance(address, dict):
        line = [
            address.get("street"),
            " ".join(str(address[p]) for p in ("postalCode", "city") if address.get(p)),
        ]
        line += [address.get("state")]
        payload["address"] = ", ".join(str(part) for part in line if part) or None
        for part in ("city", "country"):
            if payload.get(part) is None and address.get(part) is not None:
                payload[part] = address[part]
        extra = {k: v for k, v in address.items() if k not in ADDRESS_PARTS}
        if extra:
            rest["address"] = extra
    elif address is not None:
        payload["address"] = address
    payload["traits"] = _encoded(rest)
    return _without_nulls(payload)


def _group(message: dict[str, Any], traits: dict[str, Any]) -> dict[str, Any]:
    payload, rest = _take(traits, GROUP_FIELDS)
    payload["group_id"] = message.get("groupId")
    payload["traits"] = _encoded(rest)
    return _without_nulls(payload)


def _line_items(leftovers: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Segment ``products`` -> line items; product keys without a line-item field go to the companion."""
    products = leftovers.pop("products", None)
    if products is None:
        return [], leftovers
    if not isinstance(products, list) or not all(isinstance(p, dict) for p in products):
        raise SegmentError(f"properties.products: expected a list of product objects, got {_kind(products)}")
    items, extras = [], []
    for product in products:
        item, rest = _take(product, LINE_ITEM_FIELDS)
        items.append(item)
        if rest:
            extras.append({"product_id": item.get("product_id"), **rest})
    if extras:
        leftovers["products"] = extras
    return items, leftovers


def _cart_value(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Cart Viewed carries no total in the spec: the cart's value is the sum of its lines."""
    try:
        return {"value": sum(float(i["price"]) * int(i.get("quantity", 1)) for i in items)} if items else {}
    except (KeyError, TypeError, ValueError):
        return {}  # a line without a usable price: validation reports the missing value


def _take(
    source: dict[str, Any], fields: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill payload fields from ``source`` (first non-null candidate wins); return what is left.

    A candidate that is present but null is consumed too: it says nothing, so nothing is lost.
    """
    payload: dict[str, Any] = {}
    used: set[str] = set()
    for target, candidates in fields.items():
        for name in candidates:
            value = source.get(name)
            if value is None:
                if name in source:
                    used.add(name)
                continue
            if target not in payload:
                payload[target] = value
                used.add(name)
    return payload, {k: v for k, v in source.items() if k not in used}


def _companion(envelope: dict[str, Any], mapped: Mapped) -> dict[str, Any]:
    """A ``custom_event`` carrying what the typed event has no field for, linked to it by id."""
    linked = {
        **mapped.leftovers,
        COMPANION_ID_KEY: envelope["event_id"],
        COMPANION_TYPE_KEY: mapped.event_type,
    }
    return {
        "envelope": {
            **envelope,
            "event_id": str(uuid.uuid5(SEGMENT_NAMESPACE, f"{envelope['event_id']}\x00companion")),
            "event_type": "custom_event",
        },
        "payload": {"name": mapped.name, "properties": _encoded(linked)},
    }


# -- helpers -------------------------------------------------------------------------------------


def _object(container: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    """``container[key]`` as a dict: absent or null is empty, anything else but an object is refused."""
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SegmentError(f"{where or key}: expected a JSON object, got {_kind(value)}")
    return value


def _encoded(values: dict[str, Any]) -> dict[str, str]:
    """A free-form map as Patron stores it: each value JSON-encoded, so its type survives."""
    return {str(k): orjson.dumps(v).decode() for k, v in values.items()}


def _without_nulls(payload: dict[str, Any]) -> dict[str, Any]:
    """Left out rather than null: the schema default applies, and normalisers only ever see values."""
    return {k: v for k, v in payload.items() if v is not None}


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _kind(value: Any) -> str:
    """How a wrong value is named in an error: its JSON type and a short excerpt."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{names.get(type(value), 'a number')} {shown}" if value is not None else "null"
