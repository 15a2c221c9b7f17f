"""DuckDB over one snapshot, read-only and sandboxed: the engine behind ``patron sql``.

Every table of the snapshot becomes a VIEW over its Parquet file, the KPI views of ``kpis.sql`` are
created over them, and only then is the connection locked down:

* ``allowed_paths`` = the Parquet files the views read (for the *pii* role: ``allowed_directories`` =
  the snapshot directory), then ``enable_external_access = false``: DuckDB reads only those files
  (the views need them; without them they fail too) -- an analyst reaches personal data only as the
  keyed hashes of ``masked/`` (see ``patron.projections.pii``), so
  ``read_csv('/etc/passwd')``, ``read_parquet`` elsewhere, ``glob``, ``ATTACH`` and ``INSTALL``/``LOAD``
  are refused by DuckDB itself;
* extension auto-loading off and ``lock_configuration = true``: no ``SET`` can undo the above;
* a statement check with DuckDB's own parser before anything runs: only SELECT (which includes
  WITH, VALUES, FROM-first, DESCRIBE, SHOW, SUMMARIZE), EXPLAIN of such a query and
  ``PRAGMA table_info``/``show_tables`` pass. This is what keeps ``COPY ... TO`` out of the snapshot
  directory the file sandbox allows, and ``EXPLAIN ANALYZE`` from running a write;
* a timeout: a timer thread interrupts the query, which then fails with a clear message.

The session time zone is UTC, so month boundaries in KPI views are UTC months like the fact tables' days.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from patron.errors import EXIT_INVALID, EXIT_REFUSED, PatronError
from patron.projections.pii import ANALYST, MASKED_DIR, PII, PII_TABLES

DEFAULT_TIMEOUT = 30.0
"""Seconds a query may run (``patron sql --timeout``, ``PATRON_SQL_TIMEOUT``)."""

ALLOWED_PRAGMAS = frozenset({"table_info", "show_tables", "show_tables_expanded"})
LEADING_NOISE = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)*", re.S)
EXPLAIN_PREFIX = re.compile(r"^explain\s+(analyze\s+)?(\([^)]*\)\s*)?", re.I)
PRAGMA_NAME = re.compile(r"^pragma\s+(\w+)", re.I)


def kpi_sql() -> str:
    """The text of ``kpis.sql``: one ``CREATE VIEW`` per KPI, each after a comment saying what it means."""
    return resources.files("patron.projections").joinpath("kpis.sql").read_text(encoding="utf-8")


def _body(query: str) -> str:
    return LEADING_NOISE.sub("", query).rstrip().rstrip(";")


def _first_words(query: str) -> str:
    return " ".join(_body(query).split()[:2]).upper() or "(empty)"


def refusal(statement: duckdb.Statement) -> str | None:
    """Why the sandbox refuses ``statement``, or None when it may run."""
    kind = statement.type
    if kind == duckdb.StatementType.SELECT:
        return None
    if kind == duckdb.StatementType.EXPLAIN:
        inner = EXPLAIN_PREFIX.sub("", _body(statement.query), count=1)
        inner_statements = duckdb.extract_statements(inner) if inner else []
        if len(inner_statements) != 1:
            return "EXPLAIN must name one query"
        why = refusal(inner_statements[0])
        return None if why is None else f"EXPLAIN of a refused statement: {why}"
    if kind == duckdb.StatementType.PRAGMA:
        name = PRAGMA_NAME.match(_body(statement.query))
        if name and name.group(1).lower() in ALLOWED_PRAGMAS:
            return None
        return (
            f"{_first_words(statement.query)} is refused: only PRAGMA table_info('T') and PRAGMA "
            "show_tables read the catalogue; other pragmas change settings"
        )
    return (
        f"{_first_words(statement.query)} ({kind.name}) is refused: the snapshot is read-only; "
        "use SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN or PRAGMA table_info"
    )


def check_query(sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql``, after checking each may run; a refused one raises (exit 3)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise PatronError(f"SQL syntax error: {_one_line(exc)}", EXIT_INVALID) from None
    if not statements:
        raise PatronError('no SQL statement given: e.g. patron sql "SELECT * FROM rfm LIMIT 5"')
    for number, statement in enumerate(statements, start=1):
        why = refusal(statement)
        if why is not None:
            where = f"statement {number}: " if len(statements) > 1 else ""
            raise PatronError(f"{where}{why}", EXIT_REFUSED)
    return statements


def _literal(path: Path | str) -> str:
    """``path`` as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _one_line(exc: BaseException) -> str:
    """DuckDB's message without its caret diagram: the first line, plus the hint line when present."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [lines[0]] if lines else [type(exc).__name__]
    kept += [line for line in lines[1:] if line.startswith("Did you mean")]
    return " ".join(kept)


@dataclass
class SqlSession:
    """An in-memory DuckDB connection over one snapshot directory, locked down (see the module doc)."""

    snapshot_dir: Path
    timeout: float = DEFAULT_TIMEOUT
    role: str = ANALYST
    """``analyst``: personal data only as keyed hashes (``masked/``); ``pii``: the raw tables too.
    Check the caller holds the role first (``patron.projections.pii.check_role``)."""
    tables: list[str] = field(default_factory=list)
    kpi_views: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Tables and KPI views this session cannot serve (a table a view needs is missing, or no masked
    copy of a personal-data table exists for this role), and why."""

    def __post_init__(self) -> None:
        self.snapshot_dir = self.snapshot_dir.resolve()
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        # DuckDB draws a progress bar on stdout for slow queries, which would corrupt csv/json output.
        self.con.execute("SET enable_progress_bar = false")
        files = self._files()
        for name, parquet in files.items():
            self.con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({_literal(parquet)})')
            self.tables.append(name)
        self._create_kpi_views()
        if self.role == PII:
            allowed = f"SET allowed_directories = [{_literal(f'{self.snapshot_dir}/')}]"
        else:  # only the files above: not the raw personal data beside them, nor any other file
            allowed = f"SET allowed_paths = [{', '.join(_literal(p) for p in files.values())}]"
        for setting in (
            allowed,
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET lock_configuration = true",
        ):
            self.con.execute(setting)

    def _files(self) -> dict[str, Path]:
        """Table name -> the Parquet file this role reads it from. An analyst reads the personal-data
        tables masked; a snapshot written before masking existed has no masked copies, so an analyst
        does not get those tables there at all (``unavailable`` says why)."""
        files = {parquet.stem: parquet for parquet in sorted(self.snapshot_dir.glob("*.parquet"))}
        if self.role == PII:
            return files
        for name in PII_TABLES:
            if name not in files:
                continue
            masked = self.snapshot_dir / MASKED_DIR / f"{name}.parquet"
            if masked.exists():
                files[name] = masked
            else:
                del files[name]
                self.unavailable[name] = (
                    "this snapshot has no masked copy of its personal data; take a new snapshot "
                    "(or use the pii role)"
                )
        return files

    def _create_kpi_views(self) -> None:
        for statement in duckdb.extract_statements(kpi_sql()):
            name = re.search(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(\w+)", statement.query, re.I)
            assert name is not None, f"kpis.sql holds a statement that is not CREATE VIEW: {statement.query}"
            if name.group(1) in self.tables:  # materialised by `patron snapshot`: the table is the view
                self.tables.remove(name.group(1))
                self.kpi_views.append(name.group(1))
                continue
            try:
                self.con.execute(statement.query)
            except duckdb.CatalogException as exc:
                self.unavailable[name.group(1)] = _one_line(exc)
            else:
                self.kpi_views.append(name.group(1))

    def query(self, sql: str) -> pa.Table:
        """Run ``sql`` (one or more checked statements) and return the last statement's result."""
        statements = check_query(sql)
        result = pa.table({})
        for statement in statements:
            result = self._run(statement.query)
        return result

    def _run(self, sql: str) -> pa.Table:
        timer = threading.Timer(self.timeout, self.con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            relation = self.con.sql(sql)
            return pa.table({}) if relation is None else relation.to_arrow_table()
        except duckdb.InterruptException:
            raise PatronError(
                f"query stopped after {self.timeout:g} s, the SQL time limit: narrow it (WHERE, LIMIT) "
                "or raise the limit with --timeout SECONDS / PATRON_SQL_TIMEOUT",
                EXIT_REFUSED,
            ) from None
        except duckdb.PermissionException as exc:
            raise PatronError(
                f"refused by the sandbox: {_one_line(exc)}; only the snapshot's tables can be read",
                EXIT_REFUSED,
            ) from None
        except duckdb.Error as exc:
            raise PatronError(f"SQL error: {_one_line(exc)}", EXIT_INVALID) from None
        finally:
            timer.cancel()

    def schema(self, name: str) -> pa.Schema:
        """The columns of table or view ``name``."""
        if name not in self.tables and name not in self.kpi_views:
            raise PatronError(f"no table or view named {name!r}: `.tables` lists them", EXIT_INVALID)
        return self._run(f'SELECT * FROM "{name}" LIMIT 0').schema

    def close(self) -> None:
        self.con.close()


class ShellBuffer:
    """Shell input as complete commands: a dot-command is one line; SQL runs until a line ends with ``;``."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def feed(self, line: str) -> str | None:
        """The complete command ``line`` finishes, or None while a statement continues."""
        if not self.pending and line.strip().startswith("."):
            return line.strip()
        if not self.pending and not line.strip():
            return None
        self.pending.append(line)
        if not line.rstrip().endswith(";"):
            return None
        return self.flush()

    def flush(self) -> str:
        """The pending lines as one command (emptied): at end of input, or discarded on Ctrl-C."""
        command = "\n".join(self.pending)
        self.pending.clear()
        return command
