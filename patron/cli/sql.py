"""``patron sql``: read-only SQL over the current snapshot, one query or an interactive shell.

Results go to stdout (or ``--out FILE``) as a table, CSV, JSON (an array of row objects) or
Parquet; messages go to stderr. Refused statements, SQL errors and timeouts are one red line each;
in the shell they do not end the session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from patron.cli.output import console, err_console, settings_of
from patron.errors import EXIT_INVALID, PatronError
from patron.projections.pii import ANALYST, check_role
from patron.projections.snapshot import snapshot_path, snapshots_root
from patron.projections.sql import DEFAULT_TIMEOUT, ShellBuffer, SqlSession

SHELL_HELP = """\
SQL ends with ';' and may span lines. Commands:
  .tables       tables and KPI views of the snapshot
  .schema T     the columns of table or view T
  .quit         leave (also .exit or Ctrl-D)"""


WIDE = 100_000
"""Width of a table written to a file or pipe: rows are never wrapped there."""


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _text_columns(table: pa.Table) -> pa.Table:
    """Nested columns (lists, maps, structs) as JSON text: CSV has no place for them."""
    for index, column in enumerate(table.schema):
        if pa.types.is_nested(column.type):
            texts = [
                None if v is None else orjson.dumps(v, default=str).decode()
                for v in table.column(index).to_pylist()
            ]
            table = table.set_column(index, column.name, pa.array(texts, pa.string()))
    return table


def _cell(value: object) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, float):
        return str(round(value, 6))  # 0.1 + 0.2 reads 0.3; large sums keep every digit
    return escape(str(value))


def render_table(result: pa.Table, out: Console) -> None:
    shown = Table(caption=f"{result.num_rows} row{'' if result.num_rows == 1 else 's'}")
    for field in result.schema:  # text wraps, never gets cut; numbers and times stay on one line
        text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        shown.add_column(escape(field.name), overflow="fold", no_wrap=not text)
    for row in result.to_pylist():
        shown.add_row(*(_cell(value) for value in row.values()))
    out.print(shown)


def write_result(result: pa.Table, fmt: Format, out: Path | None) -> None:
    """``result`` in ``fmt`` on stdout, or into ``out``."""
    if fmt is Format.parquet:
        if out is None:
            raise PatronError("--format parquet writes a binary file: give --out FILE.parquet", EXIT_INVALID)
        pq.write_table(result, out, compression="zstd")
    elif fmt is Format.table:
        if out is None and console.is_terminal:
            render_table(result, console)
        else:  # a file or a pipe: as wide as the rows need
            with _text_target(out) as handle:
                render_table(result, Console(file=handle, width=WIDE, color_system=None))
    else:
        with _binary_target(out) as handle:
            if fmt is Format.csv:
                pa_csv.write_csv(_text_columns(result), handle)
            else:
                handle.write(orjson.dumps(result.to_pylist(), default=str, option=orjson.OPT_INDENT_2))
                handle.write(b"\n")
    if out is not None:
        err_console.print(f"wrote {result.num_rows} rows to {escape(str(out))}", highlight=False)


@contextmanager
def _text_target(out: Path | None) -> Iterator[IO[str]]:
    """``out`` opened for writing text, or stdout (left open)."""
    if out is None:
        yield sys.stdout
        return
    with out.open("w", encoding="utf-8") as handle:
        yield handle


@contextmanager
def _binary_target(out: Path | None) -> Iterator[IO[bytes]]:
    """``out`` opened for writing bytes, or stdout's byte stream (flushed, left open)."""
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with out.open("wb") as handle:
        yield handle


def sql(
    ctx: typer.Context,
    query: str | None = typer.Argument(None, help="SQL to run; without it, an interactive shell."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the result into FILE instead of stdout."
    ),
    snapshot: str | None = typer.Option(None, "--snapshot", help="Snapshot id (default: the current one)."),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT, "--timeout", envvar="PATRON_SQL_TIMEOUT", min=0.01, help="Seconds a query may run."
    ),
    role: str = typer.Option(
        ANALYST,
        "--role",
        envvar="PATRON_SQL_ROLE",
        help="analyst: personal data as keyed hashes; pii: raw values (granted in DATA/access.yaml).",
    ),
) -> None:
    """Query the snapshot with DuckDB SQL (read-only: SELECT, WITH, DESCRIBE, SHOW, EXPLAIN)."""
    settings = settings_of(ctx)
    checked = check_role(role, settings.data_dir)
    directory = snapshot_path(snapshots_root(settings), snapshot)
    session = SqlSession(directory, timeout=timeout, role=checked)
    try:
        if query is not None:
            write_result(session.query(query), fmt, out)
        else:
            _shell(session, fmt, out)
    finally:
        session.close()


def _shell(session: SqlSession, fmt: Format, out: Path | None) -> None:
    interactive = sys.stdin.isatty()
    if interactive:
        err_console.print(f"snapshot {session.snapshot_dir.name}; .help for commands", highlight=False)
    buffer = ShellBuffer()
    while True:
        try:
            line = input(("   ...> " if buffer.pending else "patron> ") if interactive else "")
        except EOFError:
            if buffer.pending:  # the last statement may lack its ';'
                _reporting(session, buffer.flush(), fmt, out)
            return
        except KeyboardInterrupt:
            buffer.flush()
            err_console.print("(statement discarded)")
            continue
        command = buffer.feed(line)
        if command in (".quit", ".exit"):
            return
        if command is not None:
            _reporting(session, command, fmt, out)


def _reporting(session: SqlSession, command: str, fmt: Format, out: Path | None) -> None:
    """Run one shell command; an error is one red line and the session goes on."""
    try:
        _shell_command(session, command, fmt, out)
    except PatronError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


def _shell_command(session: SqlSession, command: str, fmt: Format, out: Path | None) -> None:
    if command == ".help":
        console.print(SHELL_HELP, highlight=False, markup=False)
    elif command == ".tables":
        for name in session.tables:
            console.print(name, highlight=False)
        for name in session.kpi_views:
            console.print(f"{name}  (KPI view)", highlight=False)
        for name, why in session.unavailable.items():
            console.print(f"{name}  (KPI view, unavailable: {why})", highlight=False, markup=False)
    elif command.startswith(".schema"):
        name = command.removeprefix(".schema").strip()
        if not name:
            raise PatronError(".schema needs a table name, e.g. .schema rfm")
        for column in session.schema(name):
            console.print(f"{column.name}  {column.type}", highlight=False, markup=False)
    elif command.startswith("."):
        raise PatronError(f"unknown command {command.split()[0]!r}; .help lists them")
    else:
        write_result(session.query(command), fmt, out)
