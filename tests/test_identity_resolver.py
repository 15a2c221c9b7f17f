"""Identity resolution on realistic event streams: links, merges, refusals, blocklists, aliases, splits.

Scenario events go through the real ``validate_event`` (so emails and phones are normalised exactly as
ingestion does); the property tests feed generated raw event dicts of the same shape. Every test
checks the resolver against what a person would expect of a CDP, and most also check the two
determinism promises: replay gives the same output, and the identity events alone rebuild the state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patron.errors import PatronError
from patron.events.models import validate_event
from patron.identity import (
    IdentityEvent,
    IdentityRules,
    IdentityState,
    default_rules,
    rebuild,
    resolve,
    split,
)
from patron.identity.events import EVENT_NAMESPACE, identity_event_id, uuid5_text
from patron.identity.resolver import micros, profile_id_for

RULES = default_rules()
KIOSK = "kiosk-berlin-store-07"
KIOSK_RULES = IdentityRules.model_validate(
    {
        **RULES.model_dump(),
        "blocklist": {**RULES.blocklist, "device_id": [*RULES.blocklist["device_id"], KIOSK]},
    }
)
UNLIMITED = IdentityRules(priority=RULES.priority)
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
PAYLOADS: dict[str, dict[str, Any]] = {
    "page_viewed": {"url": "https://shop.example.com/trail-runner"},
    "logged_in": {"method": "password"},
    "identify": {},
    "alias": {},
    "ticket_opened": {"ticket_id": "T-77", "priority": "normal", "channel": "email"},
    "lead_created": {"lead_id": "L-5", "lead_source": "webinar", "stage": "new"},
}


def event(
    n: int, minute: int, identifiers: dict[str, Any], event_type: str = "page_viewed", **payload: Any
) -> dict[str, Any]:
    """A validated event, identifiers normalised the way ingestion normalises them (phones in region DE)."""
    return validate_event(
        {
            "envelope": {
                "event_id": str(uuid.UUID(int=n)),
                "event_type": event_type,
                "occurred_at": T0 + timedelta(minutes=minute),
                "received_at": T0 + timedelta(minutes=minute, seconds=1),
                "source": "test",
                "identifiers": identifiers,
                "context": {},
            },
            "payload": {**PAYLOADS[event_type], **payload},
        },
        default_region="DE",
    )


def run(
    events: Iterable[dict[str, Any]], rules: IdentityRules = RULES, state: IdentityState | None = None
) -> tuple[IdentityState, list[IdentityEvent], list[str | None]]:
    state = state if state is not None else IdentityState()
    emitted: list[IdentityEvent] = []
    owners: list[str | None] = []
    for item in events:
        _, out, owner = resolve(state, item, rules)
        emitted += out
        owners.append(owner)
    return state, emitted, owners


def kinds(events: list[IdentityEvent]) -> list[str]:
    return [e.kind for e in events]


def assert_consistent(state: IdentityState, rules: IdentityRules) -> None:
    """Every identifier in exactly one profile, the index agreeing, and no profile over a limit."""
    seen: dict[str, str] = {}
    for profile_id, profile in state.profiles.items():
        for kind, values in profile["ids"].items():
            assert values, f"{profile_id} keeps an empty {kind} list"
            limit = rules.plan.limit(kind)
            assert limit is None or len(values) <= limit, f"{profile_id} holds {len(values)} {kind}"
            for value in values:
                key = f"{kind}:{value}"
                assert key not in seen, f"{key} in {seen.get(key)} and {profile_id}"
                seen[key] = profile_id
        grouped = [key for part in profile["origins"].values() for key in part["keys"]]
        assert sorted(grouped) == sorted(f"{k}:{v}" for k, vs in profile["ids"].items() for v in vs)
    assert seen == state.index
    for key, partners in state.splits.items():  # what an operator split apart stays apart
        assert all(state.index[key] != state.index[partner] for partner in partners), key


SCENARIO = [
    event(1, 0, {"anonymous_id": "anon-7f3a"}),
    event(2, 5, {"user_id": "u-1001", "anonymous_id": "anon-7f3a"}, "logged_in"),
    event(
        3, 60, {"email": "  Jo.Doe@Example.COM ", "external_ids": {"shop_customer_id": "9001"}}, "identify"
    ),
    event(4, 90, {"user_id": "u-1001", "email": "jo.doe@example.com"}, "identify"),
    event(5, 120, {"email": "JO.DOE@example.com", "phone": "0151 12345678"}, "ticket_opened"),
    event(6, 150, {"email": "jo.doe@example.com", "external_ids": {"crm_id": "C-42"}}, "lead_created"),
]


def test_the_issue_scenario_ends_in_one_profile() -> None:
    state, emitted, owners = run(SCENARIO)
    anonymous = profile_id_for(RULES.plan, "anonymous_id", "anon-7f3a")
    shop = profile_id_for(RULES.plan, "external:shop_customer_id", "9001")
    assert owners == [anonymous, anonymous, shop, anonymous, anonymous, anonymous]
    assert list(state.profiles) == [anonymous]
    assert state.identifiers(anonymous) == {
        "anonymous_id": ["anon-7f3a"],
        "user_id": ["u-1001"],
        "external:shop_customer_id": ["9001"],
        "email": ["jo.doe@example.com"],
        "phone": ["+4915112345678"],
        "external:crm_id": ["C-42"],
    }
    assert kinds(emitted) == [
        "profile_created",
        "identifier_linked",
        "profile_created",
        "profiles_merged",
        "identifier_linked",
        "identifier_linked",
    ]
    merge = emitted[3]
    assert (merge.profile_id, merge.other_profile_id) == (anonymous, shop)  # the visitor was seen first
    assert set(merge.identifiers) == {("external:shop_customer_id", "9001"), ("email", "jo.doe@example.com")}
    assert emitted[4].identifiers == (("phone", "+4915112345678"),)
    assert_consistent(state, RULES)


def test_rules_key_on_kind_so_equal_values_of_different_kinds_stay_apart() -> None:
    state, _, owners = run(
        [
            event(1, 0, {"user_id": "9001"}),
            event(2, 1, {"external_ids": {"shop_customer_id": "9001"}}),
            event(3, 2, {"email": "Ann@Example.com"}),
            event(4, 3, {"email": " ann@example.COM", "device_id": "dev-1"}),
        ]
    )
    assert owners[0] != owners[1]
    assert owners[2] == owners[3]
    assert len(state.profiles) == 3


def test_blocklisted_values_never_link_two_people_and_are_reported_once() -> None:
    shared = {"device_id": KIOSK, "email": "TEST@test.com"}
    state, emitted, owners = run(
        [
            event(1, 0, {"user_id": "u-ann", **shared}),
            event(2, 1, {"user_id": "u-bob", **shared}),
            event(3, 2, {"user_id": "NULL", "device_id": KIOSK}),
        ],
        KIOSK_RULES,
    )
    assert owners[0] != owners[1] and None not in owners[:2]
    assert owners[2] is None  # nothing usable left: the event belongs to no profile
    blocked = [e for e in emitted if e.kind == "identifier_blocked"]
    assert [b.identifiers for b in blocked] == [
        (("email", "test@test.com"),),
        (("device_id", KIOSK),),
        (("user_id", "NULL"),),
    ]
    assert all(b.reason and b.identifiers[0][0] in b.reason and "blocklist" in b.reason for b in blocked)
    assert state.profile_of("device_id", KIOSK) is None
    _, out, owner = resolve(
        state, event(4, 3, {"user_id": "u-ann", "external_ids": {"legacy:id": "L1"}}), RULES
    )
    assert owner == owners[0] and kinds(out) == ["identifier_blocked"]
    assert out[0].identifiers == (("external:legacy:id", "L1"),) and "contains ':'" in (out[0].reason or "")
    assert state.identifiers(owners[0]) == {"user_id": ["u-ann"]}


def test_a_merge_of_two_user_ids_is_refused_and_the_lower_priority_identifier_dropped() -> None:
    state, emitted, owners = run(
        [
            event(1, 0, {"user_id": "u-ann", "email": "family@example.com"}),
            event(2, 1, {"user_id": "u-bob", "email": "family@example.com", "anonymous_id": "anon-bob"}),
        ]
    )
    ann, bob = owners
    assert bob == profile_id_for(RULES.plan, "user_id", "u-bob") != ann
    refused = [e for e in emitted if e.kind == "merge_refused"]
    assert len(refused) == 1
    assert refused[0].profile_id == bob and refused[0].other_profile_id == ann
    assert refused[0].identifiers == (("email", "family@example.com"),)
    assert set(refused[0].conflicts) == {("user_id", "u-ann"), ("user_id", "u-bob")}
    assert refused[0].reason is not None and "email" in refused[0].reason and "user_id" in refused[0].reason
    assert "u-ann" not in refused[0].reason  # values live only in the PII-marked fields
    assert state.identifiers(ann) == {"user_id": ["u-ann"], "email": ["family@example.com"]}
    assert state.identifiers(bob) == {"user_id": ["u-bob"], "anonymous_id": ["anon-bob"]}
    assert_consistent(state, RULES)


def test_a_new_identifier_beyond_the_limit_is_refused_but_the_event_still_attributed() -> None:
    rules = IdentityRules(priority=RULES.priority, limits={"email": 2})
    state, emitted, owners = run(
        [
            event(1, 0, {"user_id": "u-1", "email": "a@example.com"}),
            event(2, 1, {"user_id": "u-1", "email": "b@example.com"}),
            event(3, 2, {"user_id": "u-1", "email": "c@example.com"}),
        ],
        rules,
    )
    assert len(set(owners)) == 1
    assert state.identifiers(owners[0])["email"] == ["a@example.com", "b@example.com"]
    assert kinds(emitted) == ["profile_created", "identifier_linked", "merge_refused"]
    assert emitted[2].identifiers == (("email", "c@example.com"),) and emitted[2].other_profile_id is None
    assert "limit of 2 email" in (emitted[2].reason or "")


def test_alias_links_the_previous_anonymous_id_or_user_id() -> None:
    rules = IdentityRules(priority=RULES.priority, limits={"user_id": 2})
    state, emitted, owners = run(
        [
            event(1, 0, {"anonymous_id": "anon-1"}),
            event(2, 1, {"user_id": "u-new"}, "alias", previous_id="anon-1"),
            event(3, 2, {"user_id": "u-old", "email": "x@example.com"}),
            event(4, 3, {"user_id": "u-newer"}, "alias", previous_id="u-old"),
        ],
        rules,
    )
    assert owners[0] == owners[1]
    assert state.identifiers(owners[0]) == {"anonymous_id": ["anon-1"], "user_id": ["u-new"]}
    assert owners[3] == owners[2]  # the earlier user id was known as a user_id, so it links as one
    assert state.identifiers(owners[2]) == {"user_id": ["u-old", "u-newer"], "email": ["x@example.com"]}
    # Under the default limit of one user_id an alias between two user ids is refused, not forced.
    state, emitted, owners = run(
        [event(3, 2, {"user_id": "u-old"}), event(4, 3, {"user_id": "u-newer"}, "alias", previous_id="u-old")]
    )
    assert kinds(emitted)[-1] == "merge_refused" and owners[1] == profile_id_for(
        RULES.plan, "user_id", "u-newer"
    )


def test_link_kinds_switches_a_kind_off() -> None:
    rules = IdentityRules(priority=RULES.priority, link_kinds=["user_id", "email", "anonymous_id", "phone"])
    state, _, owners = run(
        [
            event(1, 0, {"user_id": "u-1", "device_id": "d"}),
            event(2, 1, {"user_id": "u-2", "device_id": "d"}),
        ],
        rules,
    )
    assert owners[0] != owners[1] and state.profile_of("device_id", "d") is None


def test_replay_is_deterministic_down_to_the_identity_event_ids() -> None:
    first_state, first, first_owners = run(SCENARIO)
    second_state, second, second_owners = run(SCENARIO)
    assert first == second and first_owners == second_owners
    assert first_state.to_bytes() == second_state.to_bytes()
    cause = SCENARIO[3]["envelope"]["event_id"]
    assert (
        first[3].event_id
        == identity_event_id(cause, "profiles_merged", 0)
        == str(uuid.uuid5(EVENT_NAMESPACE, f"{cause}:profiles_merged:0"))
    )
    # Crash after the snapshot, process event 4 again from the snapshot: the same ids come out again.
    snapshot = run(SCENARIO[:3])[0].to_bytes()
    again = [resolve(IdentityState.from_bytes(snapshot), SCENARIO[3], RULES)[1] for _ in range(2)]
    assert again[0] == again[1] == [first[3]]


def test_fast_uuid5_matches_the_standard_library() -> None:
    namespace = uuid.UUID("12345678-1234-5678-1234-567812345678")
    for name in ["", "email:jo@example.com", "user_id:ünïcødé:with:colons"]:
        assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


def test_the_survivor_is_the_profile_first_seen_earlier_in_event_time() -> None:
    late_first = [
        event(1, 30, {"email": "late@example.com"}),  # processed first, but happened later
        event(2, 10, {"phone": "+4915100000001"}),
        event(3, 40, {"email": "late@example.com", "phone": "+4915100000001"}),
    ]
    state, emitted, owners = run(late_first)
    assert owners[2] == owners[1] == profile_id_for(RULES.plan, "phone", "+4915100000001")
    assert emitted[-1].kind == "profiles_merged" and emitted[-1].other_profile_id == owners[0]
    assert state.profiles[owners[2]]["first_seen"] == micros(T0 + timedelta(minutes=10))
    tied = run(
        [
            event(1, 0, {"email": "a@example.com"}),
            event(2, 0, {"phone": "+4915100000002"}),
            event(3, 1, {"email": "a@example.com", "phone": "+4915100000002"}),
        ]
    )
    assert tied[2][2] == min(tied[2][0], tied[2][1])


def test_identity_events_and_snapshots_round_trip_through_json() -> None:
    state, emitted, _ = run(SCENARIO)
    assert [IdentityEvent.from_dict(orjson.loads(orjson.dumps(e.to_dict()))) for e in emitted] == emitted
    assert IdentityState.from_bytes(state.to_bytes()) == state
    with pytest.raises(ValueError, match="unknown kind 'profile_deleted'"):
        IdentityEvent.from_dict({**emitted[0].to_dict(), "kind": "profile_deleted"})
    with pytest.raises(ValueError, match="rebuild the state from the identity events"):
        IdentityState.from_bytes(orjson.dumps({"version": 99}))


WRONG_MERGE = [
    event(1, 0, {"email": "ann@example.com", "anonymous_id": "anon-ann"}),
    event(2, 1, {"phone": "+4915100000009", "anonymous_id": "anon-bob"}),
    event(3, 2, {"phone": "+4915100000009", "device_id": "dev-bob"}),
    event(4, 3, {"email": "ann@example.com", "phone": "+4915100000009"}),  # a typo'd phone: the wrong merge
]
AFTER_SPLIT = [
    event(5, 4, {"email": "ann@example.com", "phone": "+4915100000009"}),  # the same evidence again
    event(6, 5, {"anonymous_id": "anon-ann", "device_id": "dev-bob"}),
    event(7, 6, {"phone": "+4915100000009", "anonymous_id": "anon-bob2"}),
    event(8, 7, {"phone": "+4915100000009", "anonymous_id": "anon-ann"}),  # now Bob's side ranks first
]


def replay_with_split() -> tuple[IdentityState, list[IdentityEvent], list[str | None], str]:
    state, emitted, owners = run(WRONG_MERGE)
    ann = owners[0]
    _, split_events = split(
        state,
        ann,
        ("phone", "+4915100000009"),
        RULES,
        request_id="ops-17",
        at=T0 + timedelta(minutes=3, seconds=30),
    )
    _, later, later_owners = run(AFTER_SPLIT, state=state)
    return (
        state,
        emitted + split_events + later,
        owners + later_owners,
        split_events[0].other_profile_id or "",
    )


def test_split_undoes_the_wrong_merge_and_replay_keeps_them_apart() -> None:
    state, emitted, owners, bob = replay_with_split()
    ann = owners[0]
    assert state.identifiers(ann) == {"email": ["ann@example.com"], "anonymous_id": ["anon-ann"]}
    assert state.identifiers(bob) == {
        "phone": ["+4915100000009"],
        "anonymous_id": ["anon-bob", "anon-bob2"],
        "device_id": ["dev-bob"],
    }
    assert owners[4:] == [ann, ann, bob, bob]
    refused = [e for e in emitted if e.kind == "merge_refused"]
    assert [r.cause_id for r in refused] == [str(uuid.UUID(int=n)) for n in (5, 6, 8)]
    assert all((r.reason or "").startswith("split by operator") for r in refused)
    assert_consistent(state, RULES)
    # The whole input replayed, split at its position: identical state and identical identity events.
    again_state, again, again_owners, _ = replay_with_split()
    assert again == emitted and again_owners == owners and again_state.to_bytes() == state.to_bytes()
    assert rebuild(emitted).to_bytes() == state.to_bytes()


def test_split_of_a_never_merged_profile_moves_only_the_named_identifier() -> None:
    state, _, owners = run(
        [event(1, 0, {"user_id": "u-1", "email": "shared@example.com", "phone": "+4915100000003"})]
    )
    _, [split_event] = split(
        state, owners[0], ("email", "shared@example.com"), RULES, request_id="ops-1", at=T0
    )
    assert split_event.identifiers == (("email", "shared@example.com"),)
    assert state.identifiers(owners[0]) == {"user_id": ["u-1"], "phone": ["+4915100000003"]}
    assert state.profile_of("email", "shared@example.com") == split_event.other_profile_id


def test_split_requests_that_cannot_be_done_say_why() -> None:
    state, _, owners = run(
        [event(1, 0, {"user_id": "u-1", "email": "a@example.com"}), event(2, 1, {"user_id": "u-2"})]
    )
    with pytest.raises(PatronError, match="no profile nope"):
        split(state, "nope", ("user_id", "u-1"), RULES, request_id="r", at=T0)
    with pytest.raises(PatronError, match=f"holds no user_id with that value; it belongs to {owners[1]}"):
        split(state, owners[0], ("user_id", "u-2"), RULES, request_id="r", at=T0)
    with pytest.raises(PatronError, match="nothing would remain"):
        split(state, owners[1], ("user_id", "u-2"), RULES, request_id="r", at=T0)


# --- properties over random event sequences ---------------------------------------------------------

POOLS: dict[str, list[str]] = {  # small pools, so that events keep meeting each other's identifiers
    "user_id": ["u0", "u1", "u2", "null"],
    "email": ["e0@x.io", "e1@x.io", "test@test.com"],
    "phone": ["+491510000001", "+491510000002"],
    "anonymous_id": ["a0", "a1", "a2"],
    "device_id": ["d0", KIOSK],
    "crm_id": ["c0", "c1"],
    "shop_customer_id": ["s0", "s1"],
    "zendesk_id": ["z0"],  # not named in the rules: ranked and limited as external:*
}
EXTERNAL_NAMES = ("crm_id", "shop_customer_id", "zendesk_id")

# One to three identifiers per event, as real events carry: enough to link, few enough that merges happen.
identifier_sets = st.lists(st.sampled_from(list(POOLS)), min_size=1, max_size=3, unique=True).flatmap(
    lambda kinds: st.fixed_dictionaries({kind: st.sampled_from(POOLS[kind]) for kind in kinds})
)
event_ops = st.tuples(
    st.just("event"),
    identifier_sets,
    st.integers(0, 50),
    st.none() | st.sampled_from(["a0", "a3", "u1", "u2"]),
)
split_ops = st.tuples(st.just("split"), st.integers(0, 1000), st.integers(0, 1000))
operations = st.lists(st.one_of(event_ops, event_ops, event_ops, split_ops), min_size=8, max_size=40)


def raw_event(n: int, chosen: dict[str, str], minute: int, previous: str | None) -> dict[str, Any]:
    identifiers: dict[str, Any] = {k: v for k, v in chosen.items() if k not in EXTERNAL_NAMES}
    identifiers["external_ids"] = {k: v for k, v in chosen.items() if k in EXTERNAL_NAMES}
    return {
        "envelope": {
            "event_id": str(uuid.UUID(int=n)),
            "event_type": "alias" if previous else "page_viewed",
            "occurred_at": T0 + timedelta(minutes=minute),
            "identifiers": identifiers,
        },
        "payload": {"previous_id": previous} if previous else {},
    }


def top_profile(state: IdentityState, chosen: dict[str, str], rules: IdentityRules) -> str | None:
    kinds = {(f"external:{k}" if k in EXTERNAL_NAMES else k): v for k, v in chosen.items()}
    usable = [k for k in kinds if not rules.plan.is_blocked(k, kinds[k])]
    if not usable:
        return None
    best = min(usable, key=rules.plan.rank)
    return state.profile_of(best, kinds[best])


def play(
    ops: list[tuple], rules: IdentityRules
) -> tuple[IdentityState, list[IdentityEvent], list[str | None]]:
    """Run events and operator splits in order; a split names a profile and identifier by position."""
    state = IdentityState()
    emitted: list[IdentityEvent] = []
    owners: list[str | None] = []
    for n, op in enumerate(ops):
        if op[0] == "event":
            _, out, owner = resolve(state, raw_event(n, *op[1:]), rules)
            emitted += out
            owners.append(owner)
            if op[3] is None:  # without an alias, the event's profile holds its highest-priority identifier
                assert owner == top_profile(state, op[1], rules)
        elif state.profiles:
            profile_id = sorted(state.profiles)[op[1] % len(state.profiles)]
            held = [(k, v) for k, vs in state.identifiers(profile_id).items() for v in vs]
            try:
                emitted += split(
                    state, profile_id, held[op[2] % len(held)], rules, request_id=f"op-{n}", at=T0
                )[1]
            except PatronError as exc:
                assert "nothing would remain" in str(exc)
    return state, emitted, owners


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_random_streams_keep_the_invariants_replay_and_rebuild(ops: list[tuple]) -> None:
    state, emitted, owners = play(ops, KIOSK_RULES)
    assert_consistent(state, KIOSK_RULES)
    for blocked in ("user_id:null", "email:test@test.com", f"device_id:{KIOSK}"):
        assert blocked not in state.index
    again_state, again, again_owners = play(ops, KIOSK_RULES)
    assert again == emitted and again_owners == owners
    assert again_state.to_bytes() == state.to_bytes()
    rebuilt = rebuild(IdentityEvent.from_dict(orjson.loads(orjson.dumps(e.to_dict()))) for e in emitted)
    assert rebuilt.to_bytes() == state.to_bytes()
    assert IdentityState.from_bytes(state.to_bytes()) == state
    assert len({e.event_id for e in emitted}) == len(emitted)


def components(events: list[dict[str, Any]]) -> set[frozenset[str]]:
    """Connected components of the identifiers, two identifiers joined when one event carries both (union-find)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for item in events:
        found = item["envelope"]["identifiers"]
        keys = [f"{k}:{v}" for k, v in found.items() if k != "external_ids"]
        keys += [f"external:{k}:{v}" for k, v in found["external_ids"].items()]
        for key in keys:
            parent.setdefault(key, key)
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    groups: dict[str, set[str]] = {}
    for key in parent:
        groups.setdefault(root(key), set()).add(key)
    return {frozenset(group) for group in groups.values()}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(identifier_sets, st.integers(0, 50)), max_size=40))
def test_without_limits_or_blocklists_profiles_are_the_connected_components(specs: list[tuple]) -> None:
    events = [raw_event(n, chosen, minute, None) for n, (chosen, minute) in enumerate(specs)]
    state = IdentityState()
    for item, (chosen, _) in zip(events, specs, strict=True):
        owner = resolve(state, item, UNLIMITED)[2]
        assert owner == top_profile(state, chosen, UNLIMITED)
    profiles = {
        frozenset(f"{k}:{v}" for k, vs in p["ids"].items() for v in vs) for p in state.profiles.values()
    }
    assert profiles == components(events)
