"""``patron schemas``: the event catalogue against the registry, compatibility rules, the registry server.

``check`` is the gate for schema changes: it runs the registry's own compatibility
rule on a changed ``.avsc`` (or on every event a changed shared type is part of)
before anything is registered, so a breaking change is refused with the field named
instead of surfacing later as records consumers cannot read.
"""

from __future__ import annotations

import difflib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson
import typer
from fastavro.repository import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import load_schema
from rich.table import Table

from patron.cli.output import console, err_console, settings_of
from patron.config import Settings
from patron.errors import EXIT_INVALID, EXIT_REFUSED, PatronError
from patron.schemas.catalogue import (
    AVRO_DIR,
    Catalogue,
    EventSchema,
    default_catalogue,
    pii_paths,
)
from patron.schemas.compatibility import InvalidSchema
from patron.schemas.open import open_registry
from patron.schemas.registry import FileRegistry, IncompatibleSchema, SchemaRegistry

app = typer.Typer(
    help="Event schemas: list, show, check and register them; compatibility rules; the registry server."
)


def _registry(settings: Settings) -> SchemaRegistry:
    try:
        return open_registry(settings)
    except ValueError as exc:  # a bad PATRON_COMPATIBILITY
        raise PatronError(f"PATRON_COMPATIBILITY: {exc}", EXIT_INVALID) from None


def _where(settings: Settings) -> str:
    return settings.registry_url or str(settings.path("registry.db"))


def _subject_of(name: str, catalogue: Catalogue) -> tuple[str, EventSchema | None]:
    """An event type or record name from the catalogue becomes its subject; anything else is a subject."""
    for entry in catalogue:
        if name in (entry.event_type, entry.full_name):
            return entry.subject, entry
    return name, None


@app.command("list")
def list_schemas(ctx: typer.Context) -> None:
    """Every event type with its record, subject, registered versions and ids, and PII field count."""
    settings = settings_of(ctx)
    registry = _registry(settings)
    catalogue = default_catalogue()
    table = Table(title=f"Event schemas (registry: {_where(settings)})")
    for column in ("Event type", "Record", "Subject", "Registered (version: id)", "PII fields"):
        table.add_column(column, justify="right" if column == "PII fields" else "left")
    rows: list[tuple[str, str, str, int]] = [
        (e.event_type, e.full_name, e.subject, len(e.pii_fields)) for e in catalogue
    ]
    known = {e.subject for e in catalogue}
    for subject in registry.subjects():
        if subject not in known:  # registered by another producer, or by an older Patron
            latest = registry.get(subject).schema
            rows.append(("-", subject, subject, len(pii_paths(latest))))
    for event_type, record, subject, pii in rows:
        versions = registry.versions(subject)
        registered = (
            ", ".join(f"v{v}: {registry.get(subject, v).schema_id}" for v in versions)
            if versions
            else "[dim]not registered[/]"
        )
        table.add_row(event_type, record, subject, registered, str(pii))
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="EVENT_TYPE_OR_SUBJECT", help="e.g. order_completed"),
    version: int | None = typer.Option(
        None, "--version", "-v", min=1, help="A registered version (default: latest)."
    ),
) -> None:
    """The schema as pretty JSON on stdout; which version it is and its PII fields on stderr."""
    settings = settings_of(ctx)
    catalogue = default_catalogue()
    subject, entry = _subject_of(name, catalogue)
    registry = _registry(settings)
    versions = registry.versions(subject)
    if versions:
        if version is not None and version not in versions:
            raise PatronError(
                f"version {version} of {subject} is not registered; its versions are {', '.join(map(str, versions))}"
            )
        found = registry.get(subject, version)
        schema = found.schema
        err_console.print(
            f"{subject} version {found.version}, id {found.schema_id} ({_where(settings)})", soft_wrap=True
        )
    elif entry is not None and version is None:
        schema = entry.schema
        err_console.print(
            f"{subject}: the catalogue's schema, not registered yet (`patron schemas check` registers the catalogue)",
            soft_wrap=True,
        )
    elif entry is not None:
        raise PatronError(
            f"{subject} has no registered versions yet; drop --version to see the catalogue's schema"
        )
    else:
        close = difflib.get_close_matches(name, [*catalogue.event_types(), *registry.subjects()], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PatronError(
            f"{name!r} is neither an event type nor a registered subject{hint}; `patron schemas list` shows them all"
        )
    console.print_json(orjson.dumps(_avro_order(schema)).decode())
    pii = pii_paths(schema)
    err_console.print(f"PII fields ({len(pii)}): {', '.join(pii) if pii else 'none'}", soft_wrap=True)


_LEADING_KEYS = ("name", "type", "namespace", "doc", "aliases", "logicalType", "default")


def _avro_order(schema: Any) -> Any:
    """Keys in the order people write Avro (name and type first, fields last); registries store them sorted."""
    if isinstance(schema, list):
        return [_avro_order(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    rank = {key: i for i, key in enumerate(_LEADING_KEYS)}
    keys = sorted(schema, key=lambda k: (k == "fields", rank.get(k, len(rank))))
    return {k: _avro_order(schema[k]) for k in keys}


class _SchemaFiles(AbstractSchemaRepository):
    """Named types by full name: the files under check, else the shipped ones, else new files beside the checked ones."""

    def __init__(self, overrides: dict[str, Path], directories: list[Path]):
        self.overrides = overrides
        self.directories = directories

    def load(self, name: str) -> Any:
        path = self.overrides.get(name) or next(
            (d / f"{name}.avsc" for d in self.directories if (d / f"{name}.avsc").is_file()), None
        )
        if path is None:
            raise SchemaRepositoryError(f"no {name}.avsc next to the checked files or in the catalogue")
        return _read_json(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PatronError(f"{path}: cannot read it: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PatronError(f"{path}, line {exc.lineno}: not JSON: {exc.msg}") from None


def _full_name(schema: Any, path: Path) -> str:
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
        raise PatronError(f'{path}: not a named Avro type (a record, enum or fixed with a "name")')
    name, namespace = schema["name"], schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _expand(name: str, repo: _SchemaFiles, label: str) -> dict[str, Any]:
    """The schema named ``name`` with every referenced named type inlined, as the catalogue registers it."""
    try:
        return load_schema(name, repo=repo, _write_hint=False)
    except (
        SchemaRepositoryError,
        ValueError,
        KeyError,
        TypeError,
        fastavro.schema.SchemaParseException,
    ) as exc:
        raise PatronError(f"{label}: not a valid Avro schema: {exc}") from None


def _named_types(schema: dict[str, Any]) -> set[str]:
    named: dict[str, Any] = {}
    fastavro.parse_schema(schema, named_schemas=named, _write_hint=False)
    return set(named)


@dataclass(frozen=True)
class _Candidate:
    """A schema to check: where it came from (for messages), the subject it goes under, the expanded schema."""

    label: str
    subject: str
    schema: dict[str, Any]


def _candidates(paths: list[Path], catalogue: Catalogue) -> list[_Candidate]:
    """What checking ``paths`` means: each changed event record, and every catalogue event a changed shared type is in."""
    if not paths:
        return [_Candidate(e.event_type, e.subject, e.schema) for e in catalogue]
    overrides = {_full_name(_read_json(p), p): p for p in paths}
    directories = [AVRO_DIR, *dict.fromkeys(p.parent for p in paths)]
    repo = _SchemaFiles(overrides, directories)
    used_by_events: set[str] = set()
    events: list[_Candidate] = []
    for entry in catalogue:
        if entry.full_name in overrides:
            continue
        changed = _named_types(entry.schema) & overrides.keys()
        used_by_events |= changed
        if changed:
            rebuilt = _expand(entry.full_name, repo, f"{entry.event_type} with {', '.join(sorted(changed))}")
            if rebuilt != entry.schema:
                events.append(
                    _Candidate(
                        f"{entry.event_type} (via {', '.join(sorted(changed))})", entry.subject, rebuilt
                    )
                )
    files: list[_Candidate] = []
    for name, path in overrides.items():
        schema = _expand(name, repo, str(path))
        if "event_type" in schema or name not in used_by_events:
            files.append(_Candidate(path.name, name, schema))
    return files + events


@app.command()
def check(
    ctx: typer.Context,
    paths: list[Path] | None = typer.Argument(
        None, metavar="[PATH.avsc]...", help="Changed or new .avsc files."
    ),
    register: bool | None = typer.Option(
        None,
        "--register/--no-register",
        help="Register what passes (default: yes for the shipped catalogue, no for PATH arguments).",
    ),
) -> None:
    """Check schemas against the registry's versions under each subject's compatibility level.

    Without PATH it checks (and registers) the shipped catalogue. Exit 3 with one line per
    problem if any schema is incompatible; then nothing is registered.
    """
    settings = settings_of(ctx)
    registry = _registry(settings)
    candidates = _candidates(paths or [], default_catalogue())
    if not candidates:
        names = ", ".join(p.name for p in paths or [])
        console.print(f"nothing to check: {names} changes no event schema of the catalogue", highlight=False)
        return
    refused = 0
    for c in candidates:
        try:
            problems = registry.check(c.subject, c.schema)
        except InvalidSchema as exc:
            raise PatronError(f"{c.label}: {exc}") from None
        level = registry.compatibility(c.subject)
        if problems:
            refused += 1
            for problem in problems:
                console.print(f"[red]✗[/] {c.label}: {problem}", soft_wrap=True, highlight=False)
        else:
            versions = registry.versions(c.subject)
            against = f"{level} compatible with {len(versions)} version(s)" if versions else "new subject"
            console.print(f"[green]✓[/] {c.label} ({c.subject}): {against}", soft_wrap=True, highlight=False)
    if refused:
        raise PatronError(
            f"{refused} of {len(candidates)} schema(s) incompatible with the registry at {_where(settings)}; "
            "nothing was registered",
            EXIT_REFUSED,
        )
    if register if register is not None else not paths:
        for c in candidates:
            before = registry.versions(c.subject)
            try:
                schema_id = registry.register(c.subject, c.schema)
            except IncompatibleSchema as exc:  # registered by someone else since the check
                raise PatronError(f"{c.label}: {exc}", EXIT_REFUSED) from None
            after = registry.versions(c.subject)
            what = f"registered as version {after[-1]}" if after != before else "already registered"
            console.print(f"{c.label} ({c.subject}): {what}, id {schema_id}", soft_wrap=True, highlight=False)


@app.command()
def compatibility(
    ctx: typer.Context,
    level: str | None = typer.Argument(
        None,
        help="NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE.",
    ),
    subject: str | None = typer.Option(
        None, "--subject", "-s", help="An event type or subject (default: the global level)."
    ),
) -> None:
    """Show the compatibility level in force, or set it (globally, or for one subject)."""
    registry = _registry(settings_of(ctx))
    target = _subject_of(subject, default_catalogue())[0] if subject else None
    current = registry.compatibility(target)
    if level is None:
        console.print(current)
        return
    try:
        registry.set_compatibility(level, target)
    except ValueError as exc:
        raise PatronError(str(exc)) from None
    new = registry.compatibility(target)
    console.print(
        f"compatibility of {target or 'the registry (global)'}: {new} (was {current})", highlight=False
    )


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8081, help="TCP port (8081 is the Confluent registry's; 0 picks a free one)."),
) -> None:
    """Serve the embedded registry with the Confluent Schema Registry REST API, for Kafka tools and clients."""
    import uvicorn

    from patron.schemas.registry_server import create_app

    settings = settings_of(ctx)
    if settings.registry_url:
        raise PatronError(
            f"--registry / PATRON_REGISTRY points at {settings.registry_url}, but `schemas serve` serves the "
            "embedded registry; unset it"
        )
    try:
        registry = FileRegistry(settings.path("registry.db"), default_compatibility=settings.compatibility)
    except ValueError as exc:
        raise PatronError(f"PATRON_COMPATIBILITY: {exc}") from None
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # every keep-alive request waits ~40 ms for a delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise PatronError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port or --host"
        ) from None
    bound = listener.getsockname()[1]
    err_console.print(f"serving {registry.path} as a schema registry at http://{host}:{bound} (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(create_app(registry), log_level="info"))
    server.run(sockets=[listener])
