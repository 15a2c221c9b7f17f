"""``patron consent show``: the decision per purpose and channel, and the events behind it.

Real events (consents for one channel and for ``all``, a withdrawal, an unsubscribe, another
customer's consent) go through ``patron run`` on a temporary data directory; the command must show
exactly the decisions the activation rule makes and the customer's own consent events only.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from test_ingest import cli
from test_segments import ANA, BEN, DAY1, event

from patron.events.codec import EventCodec
from patron.schemas.registry import FileRegistry
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC


def consent(at_minutes: int, who: dict, purpose: str, channel: str, granted: bool, method: str) -> dict:
    at = DAY1 + timedelta(minutes=at_minutes)
    return event(at, "consent_changed", who, purpose=purpose, channel=channel, granted=granted, method=method)


def test_consent_show_gives_the_deciding_entry_per_purpose_and_channel_and_the_history(
    tmp_path: Path,
) -> None:
    events = [
        consent(0, ANA, "marketing", "all", True, "signup"),
        consent(5, ANA, "marketing", "sms", False, "preference_centre"),
        consent(6, ANA, "analytics", "all", True, "cookie_banner"),
        event(DAY1 + timedelta(minutes=9), "email_unsubscribed", ANA, campaign_id="c-1", message_id="m-1"),
        consent(7, BEN, "marketing", "push", False, "app"),
    ]
    log = LocalLog(tmp_path)
    try:
        codec = EventCodec(FileRegistry(tmp_path / "registry.db"))
        log.append(EVENTS_TOPIC, [codec.message(e) for e in events])
    finally:
        log.close()
    assert cli(tmp_path, "run")[0] == 0
    code, out, error = cli(tmp_path, "consent", "show", "u-ana", "--json")
    assert code == 0, error
    body = orjson.loads(out)
    decided = {
        (purpose, channel): (entry["granted"], entry["method"]) if entry else None
        for purpose, row in body["consent"].items()
        for channel, entry in row.items()
    }
    assert decided[("marketing", "email")] == (False, "unsubscribe")  # the unsubscribe is newest
    assert decided[("marketing", "sms")] == (False, "preference_centre")
    assert decided[("marketing", "push")] == (True, "signup")  # covered by "all"
    assert decided[("analytics", "phone")] == (True, "cookie_banner")
    assert decided[("personalisation", "email")] is None
    assert body["history_total"] == 4  # Ben's event is not hers
    assert [e["envelope"]["event_type"] for e in body["history"]] == [
        "email_unsubscribed",
        "consent_changed",
        "consent_changed",
        "consent_changed",
    ]
    code, out, _ = cli(tmp_path, "consent", "show", "ana@example.com")
    assert code == 0 and "Current decisions" in out and "History (newest 4 of 4)" in out
    assert cli(tmp_path, "consent", "show", "nobody@example.com")[0] == 2
