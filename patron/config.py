"""Settings shared by every command: one data directory, one broker URL, one registry.

Every value can come from a command-line option, an environment variable or the
default, in that order. The broker URL alone decides whether Patron runs on the
embedded log (``local://DIR``) or on Kafka (``kafka://HOST:PORT[,HOST:PORT]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATA_DIR = "./patron-data"
DEFAULT_PARTITIONS = 4


class ConfigError(ValueError):
    """A setting has a value Patron cannot use; the message says which and how to fix it."""


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker URL: ``local://DIR`` or ``kafka://HOST:PORT[,HOST:PORT...]``."""

    scheme: str
    location: str

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme == "local":
            location = (parts.netloc + parts.path) or DEFAULT_DATA_DIR
            return cls("local", location)
        if parts.scheme == "kafka":
            if not parts.netloc:
                raise ConfigError(f"broker URL {url!r} names no host: use kafka://HOST:PORT")
            return cls("kafka", parts.netloc)
        raise ConfigError(
            f"broker URL {url!r} has an unknown scheme {parts.scheme!r}: "
            "use local://DIR (embedded log) or kafka://HOST:PORT"
        )

    def __str__(self) -> str:
        return f"{self.scheme}://{self.location}"


@dataclass(frozen=True)
class Settings:
    """Where Patron keeps its data and which backends it talks to."""

    data_dir: Path
    broker: BrokerUrl
    registry_url: str | None
    partitions: int
    compatibility: str
    segments_dir: Path
    """Segment and trigger definition files (``PATRON_SEGMENTS``, default ``<data dir>/segments``)."""
    encrypt_pii: bool = True
    """PII fields are encrypted per subject in the log (``PATRON_PII_ENCRYPTION=off`` disables it)."""

    @classmethod
    def load(
        cls,
        data_dir: str | Path | None = None,
        broker: str | None = None,
        registry: str | None = None,
        partitions: int | None = None,
        compatibility: str | None = None,
    ) -> Settings:
        """Resolve settings from explicit values, then ``PATRON_*`` variables, then defaults."""
        env = os.environ
        resolved_dir = Path(data_dir or env.get("PATRON_DATA_DIR") or DEFAULT_DATA_DIR)
        broker_url = BrokerUrl.parse(broker or env.get("PATRON_BROKER") or f"local://{resolved_dir}")
        raw_partitions = partitions if partitions is not None else env.get("PATRON_PARTITIONS")
        try:
            n_partitions = int(raw_partitions) if raw_partitions is not None else DEFAULT_PARTITIONS
        except ValueError:
            raise ConfigError(f"PATRON_PARTITIONS={raw_partitions!r} is not a whole number") from None
        if n_partitions < 1:
            raise ConfigError(f"partitions must be at least 1, got {n_partitions}")
        return cls(
            data_dir=resolved_dir,
            broker=broker_url,
            registry_url=registry or env.get("PATRON_REGISTRY") or None,
            partitions=n_partitions,
            compatibility=(compatibility or env.get("PATRON_COMPATIBILITY") or "BACKWARD").upper(),
            segments_dir=Path(env.get("PATRON_SEGMENTS") or resolved_dir / "segments"),
            encrypt_pii=_switch("PATRON_PII_ENCRYPTION", env.get("PATRON_PII_ENCRYPTION", "on")),
        )

    def path(self, *parts: str) -> Path:
        """A path inside the data directory, its parent created on first use."""
        target = self.data_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def _switch(name: str, value: str) -> bool:
    """An on/off environment setting."""
    lowered = value.strip().lower()
    if lowered in ("on", "1", "true", "yes"):
        return True
    if lowered in ("off", "0", "false", "no"):
        return False
    raise ConfigError(f"{name}={value!r}: use on or off")
