"""Write keys: stored hashed, resolved to their source, rotated with or without grace, revoked.

The store is exercised on a real SQLite file; the CLI through the installed ``patron`` command,
so exit codes and the one-line error format are what a user sees.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patron.connectors.write_keys import WriteKeyStore
from patron.errors import PatronError

PATRON = str(Path(sys.executable).with_name("patron"))


class Clock:
    """A settable clock, so grace periods are tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_keys_are_stored_only_as_hashes_and_resolve_to_their_source(tmp_path: Path) -> None:
    store = WriteKeyStore(tmp_path / "write_keys.db")
    web, shop = store.create("web"), store.create("shop")
    assert web != shop and web.startswith("ptn_") and len(web) > 40
    assert store.source_for(web) == "web"
    assert store.source_for(shop) == "shop"
    assert store.source_for(web + "x") is None
    secret = web[len("ptn_") + 8 :].encode()
    assert secret not in (tmp_path / "write_keys.db").read_bytes()
    listed = {key.source: key for key in store.list()}
    assert listed["web"].prefix == web[:12]
    assert listed["web"].status(datetime.now(UTC)) == "active"


def test_rotation_retires_the_old_key_now_or_after_the_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    store = WriteKeyStore(tmp_path / "write_keys.db", clock=clock)
    first = store.create("web")
    second = store.rotate("web")
    assert store.source_for(first) is None
    assert store.source_for(second) == "web"
    third = store.rotate("web", grace=timedelta(minutes=10))
    clock.now += timedelta(minutes=9)
    assert store.source_for(second) == "web" and store.source_for(third) == "web"
    old = next(key for key in store.list() if second.startswith(key.prefix))
    assert old.status(clock.now) == "active until 2024-05-17 12:10:00 UTC (rotated)"
    clock.now += timedelta(minutes=2)
    assert store.source_for(second) is None
    assert store.source_for(third) == "web"
    with pytest.raises(PatronError, match="no active write key to rotate"):
        store.rotate("shop")


def test_revoke_by_source_or_prefix(tmp_path: Path) -> None:
    store = WriteKeyStore(tmp_path / "write_keys.db")
    a, b = store.create("web"), store.create("web")
    shop = store.create("shop")
    (revoked,) = store.revoke(a[:12])
    assert revoked.source == "web"
    assert store.source_for(a) is None and store.source_for(b) == "web"
    assert [k.prefix for k in store.revoke("web")] == [b[:12]]
    assert store.source_for(b) is None and store.source_for(shop) == "shop"
    with pytest.raises(PatronError, match="no active write key has source or prefix 'web'"):
        store.revoke("web")


def test_source_names_are_checked(tmp_path: Path) -> None:
    store = WriteKeyStore(tmp_path / "write_keys.db")
    for bad in ("", "web shop", "-web", "x" * 65):
        with pytest.raises(PatronError, match="is not valid"):
            store.create(bad)


def patron(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATRON, "--data-dir", str(data_dir), "keys", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_create_list_rotate_revoke(tmp_path: Path) -> None:
    created = patron(tmp_path, "create", "web")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert "shown only once" in created.stderr
    store = WriteKeyStore(tmp_path / "write_keys.db")
    assert store.source_for(key) == "web"

    listed = patron(tmp_path, "list")
    assert key[:12] in listed.stdout and key not in listed.stdout and "active" in listed.stdout

    rotated = patron(tmp_path, "rotate", "web", "--grace", "3600")
    new_key = rotated.stdout.strip()
    assert rotated.returncode == 0 and new_key != key
    assert store.source_for(key) == "web" and store.source_for(new_key) == "web"  # grace period

    revoked = patron(tmp_path, "revoke", "web")
    assert revoked.returncode == 0
    assert store.source_for(key) is None and store.source_for(new_key) is None

    missing = patron(tmp_path, "revoke", "nope")
    assert missing.returncode == 2
    assert " ".join(missing.stderr.split()) == (
        "error: no active write key has source or prefix 'nope'; `patron keys list` shows the keys"
    )
