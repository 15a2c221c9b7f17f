"""``patron serve``: the Segment-compatible HTTP collector (see docs/collector.md)."""

from __future__ import annotations

import os

import typer
import uvicorn

from patron.cli.output import err_console, settings_of
from patron.connectors.collector import EXTERNAL_ID_TRAITS_ENV


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8088, "--port", min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    external_id_traits: list[str] = typer.Option(
        [],
        "--external-id-trait",
        help="Trait that is an id in another system (e.g. crm_id); goes to identifiers.external_ids. Repeatable.",
    ),
) -> None:
    """Accept Segment/RudderStack SDK traffic on /v1/* and append it to the event log."""
    settings = settings_of(ctx)
    # The app is built by a factory in each worker process, so the settings travel in the
    # environment they are read from (`Settings.load`), whatever set them here.
    os.environ["PATRON_DATA_DIR"] = str(settings.data_dir)
    os.environ["PATRON_BROKER"] = str(settings.broker)
    if settings.registry_url:
        os.environ["PATRON_REGISTRY"] = settings.registry_url
    if external_id_traits:
        os.environ[EXTERNAL_ID_TRAITS_ENV] = ",".join(external_id_traits)
    registry = settings.registry_url or f"embedded ({settings.data_dir / 'registry.db'})"
    err_console.print(
        f"Patron collector on http://{host}:{port} — backend {settings.broker}, registry {registry}, "
        f"{workers} worker(s)",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(
        "patron.connectors.collector:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
