"""``patron snapshot`` and ``patron sql`` as a user runs them, on a generated data set.

One data directory is built per module the way a user builds it (``patron generate``, ``patron
ingest``, ``patron run``) and copied for each test, so every test starts from the same committed
profiles and owns its snapshots. Everything runs through the typer app in-process; files, SQLite and
DuckDB are real.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_ingest import cli
from typer.testing import CliRunner

from patron.cli.main import app
from patron.config import Settings
from patron.errors import PatronError
from patron.events.codec import open_codec
from patron.projections import snapshot as snapshots
from patron.projections.changes import ALERT_RAISED, PROFILE_CHANGES_TOPIC, STAGE_CHANGED
from patron.projections.fact_tables import SCHEMAS, FactTables
from patron.projections.sql import SqlSession, kpi_sql
from patron.streams.backends import open_log
from patron.streams.local_log import LocalLog
from patron.streams.log import Message, scan
from patron.streams.state import read_store

DERIVED = {"rfm", "clv", "clv_model", "health", "health_accounts", "lifecycle"}
EXPORTED = {"profiles", "identities", "segment_membership"}
KPIS = {m.group(1) for m in re.finditer(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(\w+)", kpi_sql(), re.I)}
START, DAYS = date(2026, 1, 1), 90


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after generate, ingest and run: 80 customers over 90 days from 2026-01-01."""
    base = tmp_path_factory.mktemp("committed")
    generated, data_dir = base / "generated", base / "data"
    code, _, error = cli(
        data_dir, "generate", "--customers", "80", "--days", str(DAYS), "--seed", "5",
        "--start", START.isoformat(), "--out", str(generated),
    )  # fmt: skip
    assert code == 0, error
    files = [
        str(p) for p in sorted(generated.iterdir()) if (generated / "mappings" / f"{p.stem}.yaml").exists()
    ]
    code, _, error = cli(data_dir, "ingest", *files, "--mapping-dir", str(generated / "mappings"))
    assert code == 0, error
    code, _, error = cli(data_dir, "run")
    assert code == 0, error
    return data_dir


@pytest.fixture
def data_dir(committed: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(committed, tmp_path / "data"))


def manifest(data_dir: Path) -> dict[str, Any]:
    return orjson.loads((data_dir / "snapshots" / "manifest.json").read_bytes())


def current(data_dir: Path) -> Path:
    return data_dir / "snapshots" / manifest(data_dir)["current"]


def meta(directory: Path) -> dict[str, Any]:
    return orjson.loads((directory / "snapshot.json").read_bytes())


def take(data_dir: Path, *args: str) -> Path:
    code, out, error = cli(data_dir, "snapshot", *args)
    assert code == 0, error
    assert "current snapshot:" in out
    return current(data_dir)


def fact_tables_of(directory: Path) -> FactTables:
    return FactTables(**{name: pq.read_table(directory / f"{name}.parquet") for name in SCHEMAS}).sorted()


def change_events(data_dir: Path) -> list[dict[str, Any]]:
    log = LocalLog(data_dir)
    try:
        if PROFILE_CHANGES_TOPIC not in log.topics():
            return []
        codec = open_codec(Settings.load(data_dir=data_dir))
        return [{**codec.decode(r.value), "key": r.key.decode()} for r in scan(log, PROFILE_CHANGES_TOPIC)]
    finally:
        log.close()


def test_snapshot_publishes_every_table_as_zstd_parquet_and_switches_the_manifest(data_dir: Path) -> None:
    code, out, error = cli(data_dir, "snapshot")
    assert code == 0, error
    directory = current(data_dir)
    assert manifest(data_dir)["snapshots"] == [directory.name]
    names = {p.stem for p in directory.glob("*.parquet")}
    assert names == set(SCHEMAS) | DERIVED | EXPORTED | KPIS
    described = meta(directory)
    assert described["source"] == "incremental" and described["snapshot_id"] == directory.name
    assert described["log_positions"]["events_end"] and described["log_positions"]["profiles_committed"]
    for name in names:
        parquet = pq.ParquetFile(directory / f"{name}.parquet")
        assert described["tables"][name]["rows"] == parquet.metadata.num_rows
        assert [c["name"] for c in described["tables"][name]["columns"]] == parquet.schema_arrow.names
        if parquet.metadata.num_row_groups:
            assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
        assert f"│ {name} " in out
    log = LocalLog(data_dir)
    try:
        live = {k: v for k, v in read_store(log, "profiles", "profiles").items() if "merged_into" not in v}
    finally:
        log.close()
    profiles = pq.read_table(directory / "profiles.parquet")
    assert sorted(profiles["profile_id"].to_pylist()) == sorted(live)
    assert pq.read_metadata(directory / "identities.parquet").num_rows == sum(
        len(values) for state in live.values() for values in state["ids"].values()
    )
    customers = pq.read_table(directory / "customers.parquet")
    assert customers.num_rows > 50
    assert pq.read_table(directory / "health.parquet").num_rows == customers.num_rows
    assert pq.read_table(directory / "lifecycle.parquet").num_rows == customers.num_rows
    assert 0 < pq.read_table(directory / "rfm.parquet").num_rows <= customers.num_rows


def test_materialised_kpis_equal_the_views_over_the_snapshots_tables(data_dir: Path) -> None:
    directory = take(data_dir)
    views = duckdb.connect()
    for path in directory.glob("*.parquet"):
        if path.stem not in KPIS:
            views.execute(f"CREATE VIEW {path.stem} AS SELECT * FROM read_parquet('{path}')")
    views.execute("SET TimeZone = 'UTC'")
    for statement in duckdb.extract_statements(kpi_sql()):
        views.execute(statement.query)
    session = SqlSession(directory)
    try:
        assert set(session.kpi_views) == KPIS and not KPIS & set(session.tables) and not session.unavailable
        for name in sorted(KPIS):
            stored = session.query(f"SELECT * FROM {name} ORDER BY ALL")
            assert stored.num_rows == pq.read_metadata(directory / f"{name}.parquet").num_rows
            assert stored.equals(views.sql(f"SELECT * FROM {name} ORDER BY ALL").to_arrow_table()), name
    finally:
        session.close()
    assert pq.read_table(directory / "kpi_retention_monthly.parquet").num_rows > 0


def test_a_rebuilt_snapshot_holds_the_same_fact_tables_as_the_incremental_one(data_dir: Path) -> None:
    incremental = take(data_dir)
    rebuilt = take(data_dir, "--rebuild")
    assert meta(rebuilt)["source"] == "rebuild"
    assert meta(rebuilt)["replay"]["folded"] == meta(rebuilt)["replay"]["records"] > 1000
    assert fact_tables_of(rebuilt) == fact_tables_of(incremental)


def test_as_of_rebuilds_the_state_at_the_end_of_that_day(data_dir: Path) -> None:
    take(data_dir)
    past = take(data_dir, "--as-of", "2026-02-15")
    described = meta(past)
    assert described["as_of"] == "2026-02-16T00:00:00+00:00"
    assert described["source"] == "rebuild"
    assert described["replay"]["after_as_of"] > 0
    cutoff = datetime(2026, 2, 16, tzinfo=UTC)
    customers = pq.read_table(past / "customers.parquet").to_pylist()
    assert customers and all(c["first_seen"] < cutoff and c["last_seen"] < cutoff for c in customers)
    days = pq.read_table(past / "activity_daily.parquet")["day"].to_pylist()
    assert max(days) == date(2026, 2, 15)
    # looking back is not a change happening now: nothing is compared with the later snapshot
    assert described["change_events_appended"] == 0


def test_change_events_are_appended_once_per_change(data_dir: Path) -> None:
    first = take(data_dir, "--as-of", "2026-02-01")
    raised_first = meta(first)["change_events_appended"]
    events = change_events(data_dir)
    assert len(events) == raised_first
    assert {e["envelope"]["event_type"] for e in events} <= {ALERT_RAISED}  # no stages to compare yet
    second = take(data_dir, "--as-of", "2026-03-31")
    appended = meta(second)["change_events_appended"]
    events = change_events(data_dir)
    assert appended > 0 and len(events) == raised_first + appended
    stages = [e for e in events if e["envelope"]["event_type"] == STAGE_CHANGED]
    assert stages and all(e["key"] == e["payload"]["profile_id"] for e in stages)
    # publish the first again and redo the second: the same changes, the same ids, nothing appended
    listed = manifest(data_dir)
    (data_dir / "snapshots" / "manifest.json").write_bytes(orjson.dumps({**listed, "current": first.name}))
    again = take(data_dir, "--as-of", "2026-03-31")
    assert again != second
    assert meta(again)["change_events_appended"] == 0
    assert len(change_events(data_dir)) == len(events)


def tiny(root: Path, snapshot_id: str, keep: int) -> list[str]:
    snapshots.write_tables(root / snapshot_id, {"t": pa.table({"n": [len(snapshot_id)]})})
    return snapshots.publish(root, snapshot_id, {"as_of": "2026-01-01T00:00:00+00:00"}, keep)


def test_retention_keeps_the_last_n_and_never_the_current(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    assert tiny(root, "s1", 2) == []
    assert tiny(root, "s2", 2) == []
    assert tiny(root, "s3", 2) == ["s1"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["s2", "s3"]
    assert tiny(root, "s4", 1) == ["s2", "s3"]
    assert snapshots.read_manifest(root)["snapshots"] == ["s4"]
    assert snapshots.snapshot_path(root) == root / "s4"
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "s4"]


def test_readers_see_a_whole_manifest_while_snapshots_are_published(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    tiny(root, "s000", 3)
    done = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not done.is_set():
            snapshot_id = snapshots.read_manifest(root)["current"]
            assert (root / snapshot_id / "snapshot.json").exists()
            seen.append(snapshot_id)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 40):
            tiny(root, f"s{n:03d}", 3)
    finally:
        done.set()
        reader.join()
    assert len(set(seen)) > 1
    assert not list(root.glob(".*.tmp"))


def test_a_failed_snapshot_leaves_the_current_one_published(data_dir: Path, monkeypatch) -> None:
    published = take(data_dir)

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshots, "export_profiles", disk_full)
    with pytest.raises(OSError, match="No space left"):
        snapshots.take_snapshot(Settings.load(data_dir=data_dir))
    assert current(data_dir) == published
    assert [p.name for p in (data_dir / "snapshots").iterdir() if p.is_dir()] == [published.name]


def test_profiles_and_fact_tables_come_from_one_committed_state(data_dir: Path) -> None:
    """A profile committed by `patron run --follow` while the snapshot reads is in neither table."""
    writer = LocalLog(data_dir)

    def commit_a_new_profile(step: str) -> None:
        if step == "profiles and identities":  # the fact tables are read, the profiles not yet
            with writer.transaction() as tx:
                some = writer.db.execute(
                    "SELECT value FROM state WHERE store = 'profiles.profiles'"
                ).fetchone()
                tx.put("profiles.profiles", [(b"p-committed-meanwhile", bytes(some[0]))])

    try:
        info = snapshots.take_snapshot(Settings.load(data_dir=data_dir), progress=commit_a_new_profile)
        assert "p-committed-meanwhile" in read_store(writer, "profiles", "profiles")
    finally:
        writer.close()
    profile_ids = pq.read_table(info.path / "profiles.parquet")["profile_id"].to_pylist()
    assert "p-committed-meanwhile" not in profile_ids
    assert (
        "p-committed-meanwhile"
        not in pq.read_table(info.path / "customers.parquet")["profile_id"].to_pylist()
    )


def test_a_second_snapshot_waits_for_the_first(data_dir: Path) -> None:
    root = data_dir / "snapshots"
    root.mkdir()
    finished: list[snapshots.SnapshotInfo] = []
    with open(root / snapshots.LOCK, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `patron snapshot` holds it
        waiting = threading.Thread(
            target=lambda: finished.append(snapshots.take_snapshot(Settings.load(data_dir=data_dir)))
        )
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not finished and not (root / "manifest.json").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    waiting.join(timeout=60)
    assert finished and current(data_dir) == finished[0].path


def test_keep_below_one_and_bad_dates_are_refused(data_dir: Path) -> None:
    code, _, error = cli(data_dir, "snapshot", "--as-of", "2026-02-30")
    assert code == 2 and error == "--as-of '2026-02-30' is not a date: use YYYY-MM-DD, e.g. 2024-06-30"
    with pytest.raises(PatronError, match="keep at least 1"):
        tiny(data_dir / "snapshots", "s1", 0)


def test_snapshot_list_shows_the_retained_snapshots(data_dir: Path) -> None:
    code, out, _ = cli(data_dir, "snapshot", "--list")
    assert code == 0 and "no snapshots" in out
    take(data_dir, "--as-of", "2026-01-31")
    latest = take(data_dir)
    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "snapshot", "--list"], env={"COLUMNS": "200"}
    )
    assert (
        latest.name in result.stdout
        and "incremental" in result.stdout
        and "2026-02-01T00:00" in result.stdout
    )


def test_every_keeps_taking_snapshots_until_stopped(data_dir: Path) -> None:
    patron = Path(sys.executable).with_name("patron")
    command = [str(patron), "--data-dir", str(data_dir), "snapshot", "--every", "1", "--keep", "10"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        root = data_dir / "snapshots"
        if (root / "manifest.json").exists() and len(manifest(data_dir)["snapshots"]) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, error = process.communicate(timeout=120)
    assert process.returncode == 0, error
    assert len(manifest(data_dir)["snapshots"]) >= 2 and out.count("current snapshot:") >= 2
    code, _, error = cli(data_dir, "snapshot", "--every", "5", "--as-of", "2026-01-31")
    assert code == 2 and "cannot be combined with --as-of" in error


# -- patron sql over a real snapshot ---------------------------------------------------------------
def test_sql_needs_a_snapshot(data_dir: Path) -> None:
    code, _, error = cli(data_dir, "sql", "SELECT 1")
    assert code == 2
    assert error.endswith("no snapshot yet; run `patron snapshot` first")
    take(data_dir)
    code, _, error = cli(data_dir, "sql", "SELECT 1", "--snapshot", "20990101T000000Z-000000")
    assert code == 2 and "is not in" in error and "retained:" in error


def test_sql_answers_in_every_format(data_dir: Path, tmp_path: Path) -> None:
    older = take(data_dir, "--as-of", "2026-01-31")
    take(data_dir)
    query = "SELECT segment, count(*) AS customers FROM rfm GROUP BY segment ORDER BY customers DESC, segment"
    code, out, error = cli(data_dir, "sql", query, "--format", "json")
    assert code == 0, error
    answer = orjson.loads(out)
    want = pq.read_table(current(data_dir) / "rfm.parquet")["segment"].value_counts().to_pylist()
    assert {row["segment"]: row["customers"] for row in answer} == {v["values"]: v["counts"] for v in want}
    code, out, _ = cli(data_dir, "sql", query, "--format", "csv")
    assert out.splitlines()[0] == '"segment","customers"' and len(out.splitlines()) == len(answer) + 1
    code, out, _ = cli(data_dir, "sql", query)
    assert answer[0]["segment"] in out and f"{len(answer)} rows" in out
    target = tmp_path / "answer.parquet"
    code, _, _ = cli(data_dir, "sql", query, "--format", "parquet", "--out", str(target))
    assert code == 0 and pq.read_table(target).to_pylist() == answer
    code, _, error = cli(data_dir, "sql", query, "--format", "parquet")
    assert code == 2 and "give --out FILE.parquet" in error
    # nested columns (health alerts are a list) become JSON text in CSV
    code, out, error = cli(data_dir, "sql", "SELECT alerts FROM health LIMIT 3", "--format", "csv")
    assert code == 0, error
    assert out.splitlines()[1].startswith('"[')
    # an older snapshot by id
    code, out, _ = cli(
        data_dir, "sql", "SELECT max(day) AS last FROM activity_daily", "--snapshot", older.name, "-f", "json"
    )
    assert orjson.loads(out) == [{"last": "2026-01-31"}]


def test_sql_refusals_and_errors_have_their_exit_codes(data_dir: Path) -> None:
    take(data_dir)
    code, _, error = cli(data_dir, "sql", "COPY rfm TO 'rfm.csv'")
    assert code == 3 and error.startswith("COPY RFM (COPY) is refused: the snapshot is read-only")
    code, _, error = cli(data_dir, "sql", "SELECT * FROM read_csv('/etc/passwd')")
    assert code == 3 and error.startswith("refused by the sandbox")
    code, _, error = cli(data_dir, "sql", "SELECT nope FROM rfm")
    assert code == 2 and error.startswith("SQL error: Binder Error")
    code, _, error = cli(
        data_dir, "sql", "SELECT count(*) FROM range(1000000000) a, range(1000000000) b", "--timeout", "0.3"
    )
    assert code == 3 and "query stopped after 0.3 s" in error


def test_the_shell_runs_statements_until_quit(data_dir: Path) -> None:
    take(data_dir)
    script = "\n".join(
        [
            ".tables",
            ".schema lifecycle",
            "SELECT count(*) AS n",
            "  FROM customers;",
            "DROP VIEW rfm;",
            "SELECT stage FROM lifecycle LIMIT 1;",
            ".quit",
            "SELECT 'after quit';",
        ]
    )
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "sql", "--format", "csv"], input=script)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "kpi_cohort_retention_signup  (KPI view)" in out
    assert "since  timestamp[us, tz=UTC]" in out
    customers = pq.read_metadata(current(data_dir) / "customers.parquet").num_rows
    assert f'"n"\n{customers}\n' in out
    assert '"stage"' in out
    assert "DROP VIEW (DROP) is refused" in result.stderr
    assert "after quit" not in out


# -- Kafka: the worker's profile table, read from its changelog --------------------------------------
def test_a_kafka_snapshot_reads_the_workers_changelog(
    committed: Path, tmp_path: Path, kafka_bootstrap: str, unique_topic
) -> None:
    """The profile states of the embedded run, written to a worker's changelog topic on a real broker
    the way faust keeps them (JSON key and value), give the same tables as the embedded snapshot."""
    local_dir = Path(shutil.copytree(committed, tmp_path / "local"))
    local = take(local_dir)
    kafka_dir = tmp_path / "kafka"
    kafka_dir.mkdir()
    shutil.copy(local_dir / "registry.db", kafka_dir / "registry.db")
    app_id = unique_topic("snapshot-app")
    store = LocalLog(local_dir)
    try:
        states = read_store(store, "profiles", "profiles")
    finally:
        store.close()
    settings = Settings.load(data_dir=kafka_dir, broker=f"kafka://{kafka_bootstrap}")
    log = open_log(settings)
    try:
        log.append(
            f"{app_id}-profiles.profiles-changelog",
            [Message(orjson.dumps(k), k, orjson.dumps(v), 0) for k, v in states.items()],
        )
    finally:
        log.close()
    info = snapshots.take_snapshot(settings, app_id=app_id)
    assert info.source == "incremental" and meta(info.path)["broker"] == f"kafka://{kafka_bootstrap}"
    assert fact_tables_of(info.path) == fact_tables_of(local)
    for name, key in [("profiles", ["profile_id"]), ("identities", ["profile_id", "kind", "value"]),
                      ("lifecycle", ["profile_id"])]:  # fmt: skip
        got, want = (
            pq.read_table(d / f"{name}.parquet").sort_by([(k, "ascending") for k in key])
            for d in (info.path, local)
        )
        assert got == want, name
    with pytest.raises(PatronError, match="is Kafka: take an incremental snapshot"):
        snapshots.take_snapshot(settings, rebuild=True, app_id=app_id)
