"""Open the event log the settings name: the broker URL's scheme picks the backend."""

from __future__ import annotations

from patron.config import Settings
from patron.streams.log import EventLog


def open_log(settings: Settings) -> EventLog:
    """``local://DIR`` opens the embedded SQLite log, ``kafka://HOST:PORT`` the Kafka one."""
    if settings.broker.scheme == "local":
        from patron.streams.local_log import LocalLog

        return LocalLog(settings.broker.location, default_partitions=settings.partitions)
    from patron.streams.kafka_log import KafkaLog

    return KafkaLog(settings.broker.location, default_partitions=settings.partitions)
