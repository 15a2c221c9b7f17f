"""`make demo`: the main job end to end on the embedded default, through the real CLI.

Generates a realistic multi-source data set, ingests the files through the file
connector, sends the web events through the HTTP collector with the Segment SDK,
shows what landed in the log and in the dead-letter store, resolves identities
into unified profiles and shows a few merges and one profile, then snapshots the
projections (RFM, CLV, health, lifecycle, KPIs), queries them with SQL and writes the report, and
finally shows the segments and triggers marketing tools subscribe to. The generated period ends
today, so "in the last 30 days" means what it says. Every step is a ``patron`` command a user could
type, printed before it runs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.rule import Rule

DEMO_DIR = Path("patron-data/demo")
INPUT = DEMO_DIR / "input"
DAYS = 120
EXAMPLE_SEGMENTS = Path(__file__).resolve().parent.parent / "deploy" / "segments" / "marketing.yaml"
console = Console()


def patron(*args: str, capture: bool = False) -> str:
    """Run one ``patron`` command against the demo data directory, echoing it first."""
    command = [str(Path(sys.executable).with_name("patron")), "--data-dir", str(DEMO_DIR), *args]
    console.print(f"[bold cyan]$ patron --data-dir {DEMO_DIR} {' '.join(args)}[/]")
    result = subprocess.run(command, check=True, text=True, capture_output=capture)
    return result.stdout if capture else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_with_segment_sdk(write_key: str, port: int) -> tuple[int, int]:
    """Replay the generated collector messages through the real Segment SDK, host changed only.

    The data set holds some malformed messages on purpose; the SDK refuses to send the
    worst of them itself, so those go over plain HTTP to show the collector's 400 answer.
    Returns (messages sent by the SDK, messages the collector refused over plain HTTP).
    """
    import segment.analytics as analytics

    analytics.write_key = write_key
    analytics.host = f"http://127.0.0.1:{port}"
    by_sdk = refused = 0
    for line in (INPUT / "collector_batch.jsonl").read_bytes().splitlines():
        try:
            message = orjson.loads(line)
            sdk_call(analytics, message)
            by_sdk += 1
        except (AssertionError, ValueError, TypeError, AttributeError):
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/track", content=line, auth=(write_key, ""))
            refused += answer.status_code == 400
    analytics.flush()
    analytics.shutdown()
    return by_sdk, refused


def sdk_call(analytics: object, message: dict[str, object]) -> None:
    """One Segment SDK call for a Segment API message (track, identify or page)."""
    stamp = message.get("timestamp")
    common = {
        "user_id": message.get("userId"),
        "anonymous_id": message.get("anonymousId"),
        "context": message.get("context"),
        "timestamp": datetime.fromisoformat(stamp) if isinstance(stamp, str) else None,
        "message_id": message.get("messageId"),
    }
    kind = message.get("type", "track")
    if kind == "identify":
        analytics.identify(traits=message.get("traits"), **common)  # type: ignore[attr-defined]
    elif kind == "page":
        analytics.page(name=message.get("name"), properties=message.get("properties"), **common)  # type: ignore[attr-defined]
    else:
        analytics.track(event=message.get("event"), properties=message.get("properties"), **common)  # type: ignore[attr-defined]


def serve_and_send() -> None:
    key = patron("keys", "create", "web-sdk", capture=True).strip().splitlines()[-1].split()[-1]
    port = free_port()
    console.print(f"[bold cyan]$ patron --data-dir {DEMO_DIR} serve --port {port} &[/]")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("patron")),
            "--data-dir",
            str(DEMO_DIR),
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        by_sdk, refused = send_with_segment_sdk(key, port)
        console.print(
            f"sent {by_sdk} messages with the Segment Python SDK to http://127.0.0.1:{port}; "
            f"{refused} malformed messages the SDK would not send were refused by the collector with 400"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    console.print(Rule("1. generate a multi-source data set (dirty identifiers, duplicates, malformed rows)"))
    start = (datetime.now(UTC) - timedelta(days=DAYS - 1)).date().isoformat()
    patron(
        "generate",
        "--customers",
        "400",
        "--days",
        str(DAYS),
        "--start",
        start,
        "--seed",
        "7",
        "--out",
        str(INPUT),
    )
    console.print(Rule("2. register the event catalogue; put example segment definitions in place"))
    patron("schemas", "check", "--register")
    (DEMO_DIR / "segments").mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_SEGMENTS, DEMO_DIR / "segments" / EXAMPLE_SEGMENTS.name)
    console.print(f"copied {EXAMPLE_SEGMENTS.name} into {DEMO_DIR / 'segments'}")
    patron("segments", "validate")
    console.print(Rule("3. ingest the files through the file connector"))
    files = sorted(p for p in INPUT.iterdir() if p.is_file() and p.suffix in {".csv", ".jsonl", ".parquet"})
    files = [
        p
        for p in files
        if p.name != "collector_batch.jsonl" and (INPUT / "mappings" / f"{p.stem}.yaml").exists()
    ]
    patron("ingest", *map(str, files), "--mapping-dir", str(INPUT / "mappings"))
    console.print(Rule("4. send web events through the Segment-compatible HTTP collector"))
    serve_and_send()
    console.print(Rule("5. what is in the log"))
    patron("log", "count", "--by", "type")
    patron("log", "count", "--by", "source")
    patron("log", "tail", "-n", "3", "--type", "order_completed")
    console.print(Rule("6. what was rejected, and why"))
    patron("dlq", "list", "--limit", "8")
    resolve_identities()
    analytics()
    segments()
    console.print(f"\nEverything is in [bold]{DEMO_DIR}[/]; try `patron --data-dir {DEMO_DIR} --help`.")


def resolve_identities() -> None:
    """Issue 3's result: identity resolution, probabilistic duplicates, one unified profile."""
    console.print(Rule("7. resolve identities into unified profiles (stream processors, embedded runner)"))
    patron("run", "--until-caught-up")
    console.print(Rule("8. find probable duplicates without a shared identifier, then apply the merges"))
    patron("identity", "match")
    patron("identity", "review")
    patron("run", "--until-caught-up")
    console.print(Rule("9. the unified profiles"))
    export = DEMO_DIR / "export"
    patron("profile", "--export", str(export))
    profile_id, email = richest_profile(export)
    truth = pacsv.read_csv(
        INPUT / "ground_truth.csv", convert_options=pacsv.ConvertOptions(include_columns=["person_id"])
    )
    people = len(pc.unique(truth["person_id"]))
    profiles = pq.read_metadata(export / "profiles.parquet").num_rows
    known = pq.read_table(export / "identities.parquet")
    known = known.filter(pc.invert(pc.is_in(known["kind"], pa.array(["anonymous_id", "device_id"]))))
    identified = len(pc.unique(known["profile_id"]))
    console.print(
        f"{profiles} profiles for {people} real people in the generated ground truth; {identified} profiles carry "
        f"an identifier beyond anonymous/device ids, the rest are visitors who never identified themselves"
    )
    patron("identity", "show", profile_id)
    patron("profile", email, "--timeline", "8")


def analytics() -> None:
    """Issue 4's result: a snapshot of every projection, SQL over it, the HTML report."""
    console.print(Rule("10. snapshot the projections (Parquet), and hand the scores to the segments"))
    patron("snapshot")
    console.print(Rule("11. analysts' SQL over the snapshot (DuckDB, read-only)"))
    patron(
        "sql",
        "SELECT segment, count(*) AS customers, round(avg(recency_days)) AS recency_days, "
        "round(avg(frequency), 1) AS orders, round(avg(monetary), 2) AS monetary "
        "FROM rfm GROUP BY ALL ORDER BY monetary DESC",
    )
    patron(
        "sql",
        "SELECT profile_id, round(p_alive, 2) AS p_alive, round(expected_purchases_365d, 2) AS purchases_365d, "
        "round(clv_365d, 2) AS clv_365d, round(historical_clv, 2) AS historical "
        "FROM clv ORDER BY clv_365d DESC NULLS LAST LIMIT 5",
    )
    patron(
        "sql",
        "SELECT h.status, count(*) AS customers, round(avg(h.score), 1) AS avg_score, "
        "count(*) FILTER (WHERE len(h.alerts) > 0) AS with_alerts FROM health h GROUP BY ALL ORDER BY avg_score",
    )
    patron("sql", "SELECT stage, count(*) AS customers FROM lifecycle GROUP BY ALL ORDER BY customers DESC")
    patron("sql", "SELECT * FROM kpi_retention_monthly")
    console.print(Rule("12. the HTML report (RFM grid, health factors, CLV, cohorts, lifecycle funnel)"))
    patron("report")


def segments() -> None:
    """Issue 5's result: segment sizes and the change events marketing tools receive."""
    console.print(Rule("13. segments and triggers: the snapshot's scores reach the profiles stage"))
    patron("run", "--until-caught-up")
    patron("segments", "list")
    console.print(Rule("14. what marketing tools receive (patron.segment-changes, patron.triggers)"))
    patron("log", "tail", "-n", "4", "--topic", "patron.segment-changes")
    patron("log", "tail", "-n", "4", "--topic", "patron.triggers")
    patron("segments", "members", "champions", "--limit", "5")


def richest_profile(export: Path) -> tuple[str, str]:
    """The profile with the most identifiers that has an email: the most merging to show."""
    identities = pq.read_table(export / "identities.parquet")
    counts = (
        identities.group_by("profile_id")
        .aggregate([("kind", "count")])
        .sort_by([("kind_count", "descending")])
    )
    with_email = set(identities.filter(pc.equal(identities["kind"], "email"))["profile_id"].to_pylist())
    profile_id = next(p for p in counts["profile_id"].to_pylist() if p in with_email)
    emails = identities.filter(
        pc.and_(pc.equal(identities["profile_id"], profile_id), pc.equal(identities["kind"], "email"))
    )
    return profile_id, emails["value"][0].as_py()


if __name__ == "__main__":
    main()
