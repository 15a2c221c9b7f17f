"""Identity rules: the shipped YAML loads, and a broken rules file fails naming the file and the key.

The files are real YAML on disk read through ``load_rules``, the path the identity stage takes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patron.errors import PatronError
from patron.identity.rules import BASE_KINDS, default_rules, load_rules

DEFAULT = default_rules()


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "identity.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def base(**changes: object) -> dict[str, object]:
    return {"priority": list(BASE_KINDS), **changes}


def test_shipped_rules_rank_limit_and_block_as_documented() -> None:
    plan = DEFAULT.plan
    order = sorted(
        ["device_id", "email", "external:crm_id", "user_id", "anonymous_id", "phone"], key=plan.rank
    )
    assert order == ["user_id", "external:crm_id", "email", "phone", "anonymous_id", "device_id"]
    assert (plan.limit("user_id"), plan.limit("email"), plan.limit("phone")) == (1, 5, 3)
    assert plan.is_blocked("email", "test@test.com")
    assert plan.is_blocked("user_id", " NULL ") and plan.is_blocked("phone", "undefined")
    assert plan.is_blocked("device_id", "00000000-0000-0000-0000-000000000000")
    assert not plan.is_blocked("email", "jo@example.com")
    assert load_rules(None) == DEFAULT


def test_unknown_external_names_rank_below_the_configured_kind_and_use_the_wildcard_limit() -> None:
    plan = DEFAULT.plan
    assert plan.rank("email") < plan.rank("external:zendesk_id") < plan.rank("phone")
    assert plan.limit("external:zendesk_id") == DEFAULT.limits["external:*"]
    assert plan.limit("external:crm_id") == 1  # a named external keeps its own limit


def test_wildcard_blocklist_applies_to_unlisted_externals_too(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, base(blocklist={"external:*": ["guest"], "external:crm_id": ["C-0"]})))
    assert rules.plan.is_blocked("external:zendesk_id", "GUEST")
    assert rules.plan.is_blocked("external:crm_id", "c-0") and rules.plan.is_blocked(
        "external:crm_id", "guest"
    )
    assert not rules.plan.is_blocked("email", "guest")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            base(limits={"emial": 3}),
            "key 'limits.emial': unknown identifier kind 'emial' (did you mean 'email'?)",
        ),
        (base(limits={"email": 0}), "key 'limits.email': limit must be at least 1"),
        (
            base(blocked_values=["none", None]),
            "key 'blocked_values.1': None (NoneType) is not text; quote it",
        ),
        (
            base(blocklist={"device_id": ["ok", None]}),
            "key 'blocklist.device_id.1': None (NoneType) is not text",
        ),
        (
            {"priority": ["user_id", "email"]},
            "key 'priority': every identifier field needs a place; add anonymous_id",
        ),
        (base(priority=[*BASE_KINDS, "email"]), "key 'priority': email listed more than once"),
        (
            base(priority=[*BASE_KINDS, "external:a:b"]),
            "key 'priority.5': 'external:a:b' is not a valid external",
        ),
        (
            base(priority=[*BASE_KINDS, "external:*"]),
            "key 'priority.5': 'external:*' is not a valid external",
        ),
        (base(unknown_external_below="fax"), "key 'unknown_external_below': unknown identifier kind 'fax'"),
        (base(unknown_external_below="external:crm_id"), "'external:crm_id' is not in priority"),
        (base(limit={"email": 3}), "key 'limit': Extra inputs are not permitted"),
        (base(link_kinds=["mail"]), "key 'link_kinds.0': unknown identifier kind 'mail'"),
    ],
)
def test_invalid_rules_name_the_file_and_the_yaml_key(tmp_path: Path, data: dict, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(PatronError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: identity rules")
    assert expected in message
    assert "\n" not in message


def test_unreadable_or_malformed_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(PatronError, match="cannot read identity rules"):
        load_rules(tmp_path / "missing.yaml")
    with pytest.raises(PatronError, match="not valid YAML"):
        load_rules(write(tmp_path, "priority: [user_id\n"))
    with pytest.raises(PatronError, match="must be a YAML mapping"):
        load_rules(write(tmp_path, "- user_id\n"))
