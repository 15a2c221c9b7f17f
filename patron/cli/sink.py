"""``patron sink``: deliver segment changes and triggers to other tools (``patron sink webhook URL``)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from patron.cli.output import console, err_console, settings_of, transient_progress
from patron.config import Settings
from patron.connectors.deadletter import DeadLetterStore
from patron.connectors.webhook_sink import (
    SINK_SOURCE,
    Selection,
    SinkCounts,
    WebhookClient,
    WebhookSink,
    public_url,
)
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import open_codec
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.positioned import KafkaSource, LocalSource, PositionedSource

app = typer.Typer(help="Deliver segment changes and triggers to other tools.", no_args_is_help=True)
SECRET_ENV = "PATRON_WEBHOOK_SECRET"


def default_group(url: str) -> str:
    """One position per destination: a hash, so a token in the URL never shows in group listings."""
    return "patron-webhook-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def _secret(secret_env: str | None) -> bytes | None:
    """The signing secret from ``--secret-env``'s variable (required) or ``PATRON_WEBHOOK_SECRET`` (optional)."""
    value = os.environ.get(secret_env or SECRET_ENV)
    if secret_env and not value:
        raise PatronError(
            f"--secret-env {secret_env}: the variable is not set or empty; export it or drop the option",
            EXIT_INVALID,
        )
    return value.encode() if value else None


def _open_source(settings: Settings, topic: str, group: str, timeout: float) -> PositionedSource:
    if settings.broker.scheme == "local":
        return LocalSource(LocalLog(settings.broker.location, settings.partitions), topic, group)
    log = KafkaLog(settings.broker.location, settings.partitions, timeout=timeout)
    try:
        return KafkaSource(log, topic, group)
    except BaseException:
        log.close()
        raise


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C / SIGTERM finish the record in hand (or abandon its retries, uncommitted) and stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command("webhook")
def webhook(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Where to POST each event (http or https)."),
    topic: str = typer.Option(SEGMENT_CHANGES_TOPIC, "--topic", help="Topic to read, e.g. patron.triggers."),
    segments: str = typer.Option(
        None, "--segments", help="Only these segments/triggers (comma-separated names)."
    ),
    channel: str = typer.Option(
        None, "--channel", help="Only events allowed on this channel (consent); others count as suppressed."
    ),
    secret_env: str = typer.Option(
        None,
        "--secret-env",
        help=f"Variable holding the HMAC secret for X-Patron-Signature (default: {SECRET_ENV}, if set).",
    ),
    max_attempts: int = typer.Option(5, "--max-attempts", min=1, help="Attempts before a dead letter."),
    backoff: float = typer.Option(0.5, "--backoff", min=0.0, help="First retry delay (s); doubles, +jitter."),
    group: str = typer.Option(
        None, "--group", help="Consumer name whose position is kept (default: one per URL)."
    ),
    follow: bool = typer.Option(
        False, "--follow/--once", help="Keep delivering new events, or stop at the current end."
    ),
    timeout: float = typer.Option(
        10.0, "--timeout", min=0.1, help="Seconds per HTTP attempt and per broker round trip."
    ),
) -> None:
    """POST each event of a topic as JSON, at least once, signed; dead-letter what keeps failing."""
    settings = settings_of(ctx)
    wanted = frozenset(name.strip() for name in segments.split(",") if name.strip()) if segments else None
    if segments is not None and not wanted:
        raise PatronError("--segments names no segment: give comma-separated names, e.g. churn,vip")
    stop = threading.Event()
    client = WebhookClient(
        url,
        secret=_secret(secret_env),
        timeout=timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        stop=stop,
    )
    group = group or default_group(url)
    try:
        source = _open_source(settings, topic, group, timeout)
        try:
            sink = WebhookSink(
                source,
                open_codec(settings),
                client,
                DeadLetterStore(source.log),
                selection=Selection(wanted, channel),
                group=group,
            )
            with _stop_on_signals(stop):
                counts = _run(sink, source, follow, url, topic, group)
        finally:
            source.close()
    finally:
        client.close()
    _summary(counts, public_url(url), topic, group)


def _run(
    sink: WebhookSink, source: PositionedSource, follow: bool, url: str, topic: str, group: str
) -> SinkCounts:
    if follow:
        err_console.print(
            f"Delivering {topic} to {public_url(url)} as {group}; Ctrl-C stops.", highlight=False
        )
        return sink.run(follow=True)
    progress = transient_progress("sink: {task.description}")
    with progress:
        task = progress.add_task(topic, total=source.pending())
        return sink.run(on_record=lambda _outcome: progress.advance(task))


def _summary(counts: SinkCounts, url: str, topic: str, group: str) -> None:
    console.print(
        f"{topic} -> {url} (position {group}): {counts.delivered} delivered, {counts.suppressed} suppressed, "
        f"{counts.filtered} filtered, {counts.dead_lettered} dead-lettered, {counts.retries} retries.",
        highlight=False,
        soft_wrap=True,
    )
    if counts.dead_lettered:
        console.print(
            f"[yellow]{counts.dead_lettered} record(s) filed as dead letters:[/] "
            f"patron dlq list --source {SINK_SOURCE}",
            highlight=False,
        )
