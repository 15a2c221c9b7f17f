"""Personal data in analysts' SQL: hashed by default, raw only for a granted pii role, no way around it.

A real snapshot of generated multi-source data (names, emails, phones, CRM ids), queried through
``SqlSession`` and the ``patron sql`` command over real Parquet files and a real DuckDB.
"""

from __future__ import annotations

import getpass
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import processed_data_dir
from test_ingest import cli

from patron.errors import EXIT_REFUSED, PatronError
from patron.projections.pii import ACCESS_FILE, MASKED_DIR, SECRET_FILE, check_role
from patron.projections.sql import SqlSession

DAYS = 60


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after generate, ingest, run and snapshot: 30 customers."""
    return processed_data_dir(tmp_path_factory.mktemp("pii"), 30, DAYS, 11)


@pytest.fixture
def data_dir(snapshotted: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(snapshotted, tmp_path / "data"))


def current(data_dir: Path) -> Path:
    root = data_dir / "snapshots"
    return root / json.loads((root / "manifest.json").read_text())["current"]


def personal_values(snapshot: Path) -> set[str]:
    """Every raw email, phone, user id, CRM id and name in the snapshot, read from the raw files."""
    identities = pq.read_table(snapshot / "identities.parquet").to_pylist()
    values = {row["value"] for row in identities}
    for row in pq.read_table(snapshot / "profiles.parquet").to_pylist():
        for key, value in row["traits"]:
            if key in ("first_name", "last_name", "name", "address", "birthday"):
                values.add(json.loads(value))
    return {value for value in values if len(value) >= 4}


def everything(session: SqlSession) -> str:
    """The text of every row of every table and view the session serves."""
    return "\n".join(
        str(session.query(f'SELECT * FROM "{name}"').to_pylist())
        for name in session.tables + session.kpi_views
    )


def test_an_analyst_sees_no_personal_value_anywhere(data_dir: Path) -> None:
    snapshot = current(data_dir)
    personal = personal_values(snapshot)
    emails = {v for v in personal if "@" in v}
    assert len(emails) >= 20 and any(v.startswith("+") for v in personal)  # the data has what we hide
    session = SqlSession(snapshot)
    try:
        shown = everything(session)
        leaked = sorted(value for value in personal if value in shown)
        assert leaked == []
        hashed = session.query("SELECT count(DISTINCT value) AS n FROM identities WHERE kind = 'email'")
        assert hashed.to_pylist() == [{"n": len(emails)}]  # distinct counts survive hashing
        kinds = session.query("SELECT kind, min(value) AS v FROM identities GROUP BY kind").to_pylist()
        assert len(kinds) >= 4 and all(row["v"].startswith("h:") for row in kinds), kinds
        traits = session.query(
            "SELECT traits['first_name'] AS f, traits['country'] AS c FROM profiles"
        ).to_pylist()
        assert any(row["f"] and json.loads(row["f"]).startswith("h:") for row in traits)
        assert any(row["c"] and not json.loads(row["c"]).startswith("h:") for row in traits)  # not personal
    finally:
        session.close()


def test_hashes_are_stable_across_sessions_and_snapshots_and_join(data_dir: Path) -> None:
    first = current(data_dir)
    code, _, error = cli(data_dir, "snapshot")
    assert code == 0, error
    second = current(data_dir)
    assert second != first
    query = "SELECT profile_id, value FROM identities WHERE kind = 'email' ORDER BY profile_id"
    sessions = [SqlSession(first), SqlSession(first), SqlSession(second)]
    try:
        results = [session.query(query).to_pylist() for session in sessions]
        joined = sessions[0].query(
            "SELECT count(*) AS n FROM identities i JOIN profiles p USING (profile_id) "
            "JOIN identities j ON j.value = i.value AND j.kind = i.kind WHERE i.kind = 'email'"
        )
    finally:
        for session in sessions:
            session.close()
    assert results[0] == results[1] == results[2] and results[0]
    assert joined.to_pylist()[0]["n"] >= len(results[0])


def test_the_pii_role_needs_a_grant_and_then_sees_raw_values(data_dir: Path) -> None:
    snapshot = current(data_dir)
    email = next(v for v in personal_values(snapshot) if "@" in v)
    code, _, error = cli(data_dir, "sql", "--role", "pii", "SELECT 1")
    assert code == EXIT_REFUSED and "role 'pii' is not granted to user" in error and ACCESS_FILE in error
    code, out, _ = cli(
        data_dir, "sql", "--format", "csv", f"SELECT count(*) FROM identities WHERE value = '{email}'"
    )
    assert (code, out.split()[-1]) == (0, "0")  # analysts cannot look a person up

    (data_dir / ACCESS_FILE).write_text(f"roles:\n  pii:\n    users: [{getpass.getuser()}]\n")
    code, out, error = cli(
        data_dir,
        "sql",
        "--role",
        "pii",
        "--format",
        "csv",
        f"SELECT count(*) FROM identities WHERE value = '{email}'",
    )
    assert (code, out.split()[-1]) == (0, "1"), error
    assert check_role("pii", data_dir) == "pii"
    with pytest.raises(PatronError, match="not granted to user 'mallory'"):
        check_role("pii", data_dir, user="mallory")
    code, _, error = cli(data_dir, "sql", "--role", "admin", "SELECT 1")
    assert code == 2 and "unknown SQL role 'admin'" in error


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_parquet('{snapshot}/identities.parquet')",
        "SELECT * FROM '{snapshot}/profiles.parquet'",
        "SELECT * FROM read_parquet('{snapshot}/*.parquet')",
        "SELECT * FROM glob('{snapshot}/*')",
        "SELECT * FROM read_text('{data}/{secret}')",
        "SELECT * FROM read_csv('{data}/{secret}')",
        "SELECT * FROM read_parquet('{snapshot}/{masked}/../identities.parquet')",
    ],
)
def test_the_raw_files_and_the_secret_are_out_of_an_analysts_reach(data_dir: Path, sql: str) -> None:
    snapshot = current(data_dir)
    session = SqlSession(snapshot)
    try:
        with pytest.raises(PatronError) as refused:
            session.query(sql.format(snapshot=snapshot, data=data_dir, secret=SECRET_FILE, masked=MASKED_DIR))
        assert refused.value.exit_code == EXIT_REFUSED
        secret = (data_dir / SECRET_FILE).read_bytes().hex()
        catalogue = str(session.query("SELECT sql FROM duckdb_views()").to_pylist())
        catalogue += str(session.query("SELECT * FROM duckdb_settings()").to_pylist())
        assert secret not in catalogue
    finally:
        session.close()
    assert oct((data_dir / SECRET_FILE).stat().st_mode & 0o777) == "0o600"


def test_the_report_shows_no_personal_value(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    code, _, error = cli(data_dir, "report", "--out", str(out))
    assert code == 0, error
    html = out.read_text(encoding="utf-8")
    assert [value for value in personal_values(current(data_dir)) if value in html] == []


def test_a_snapshot_without_masked_copies_serves_analysts_everything_else(data_dir: Path) -> None:
    snapshot = current(data_dir)
    shutil.rmtree(snapshot / MASKED_DIR)  # as a snapshot taken before masking existed
    session = SqlSession(snapshot)
    try:
        assert "identities" not in session.tables and "profiles" not in session.tables
        assert "take a new snapshot" in session.unavailable["identities"]
        assert session.query("SELECT count(*) AS n FROM customers").to_pylist()[0]["n"] > 0
    finally:
        session.close()
