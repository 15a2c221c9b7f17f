"""A minimal consumer of Patron's segment changes, the way any Kafka tool would write one.

    python segment_consumer.py BOOTSTRAP REGISTRY_URL [--topic patron.segment-changes]
                               [--group my-tool] [--stop-at-end]

Each record value is Confluent-framed Avro: byte 0 is the magic 0, bytes 1-4 the schema id
(big-endian), the rest the Avro body. The writer's schema is fetched once per id from the
registry (GET /schemas/ids/ID). Delivery is at least once, so the event id is the dedup key:
here a set, in a real tool a unique constraint. The offset is committed after processing.
"""

from __future__ import annotations

import argparse
import io
import json
import struct

import fastavro
import httpx
from confluent_kafka import Consumer, KafkaError

_schemas: dict[int, object] = {}


def decode(registry: str, value: bytes) -> dict:
    magic, schema_id = struct.unpack(">bI", value[:5])
    if magic != 0:
        raise ValueError(f"not Confluent wire format (magic byte {magic})")
    if schema_id not in _schemas:
        text = httpx.get(f"{registry}/schemas/ids/{schema_id}").raise_for_status().json()["schema"]
        _schemas[schema_id] = fastavro.parse_schema(json.loads(text))
    return fastavro.schemaless_reader(io.BytesIO(value[5:]), _schemas[schema_id])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("registry")
    parser.add_argument("--topic", default="patron.segment-changes")
    parser.add_argument("--group", default="segment-consumer-example")
    parser.add_argument("--stop-at-end", action="store_true", help="exit once every partition is read")
    args = parser.parse_args()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 10000,  # a dead consumer's partitions move on after 10 s
        }
    )
    consumer.subscribe([args.topic])
    seen: set[str] = set()
    done: set[int] = set()
    try:
        while True:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise SystemExit(f"Kafka error: {message.error()}")
                done.add(message.partition())
                if args.stop_at_end and done >= {tp.partition for tp in consumer.assignment()}:
                    break
                continue
            done.discard(message.partition())
            event = decode(args.registry, message.value())
            envelope, payload = event["envelope"], event["payload"]
            event_id = str(envelope["event_id"])
            if event_id not in seen:  # at-least-once: a redelivered event is skipped
                seen.add(event_id)
                print(
                    json.dumps(
                        {
                            "event_id": event_id,
                            "event_type": envelope["event_type"],
                            "profile_id": message.key().decode(),
                            "segment": payload.get("segment") or payload.get("trigger"),
                            "reason": payload["reason"],
                            "channels": payload["channels"],
                        }
                    ),
                    flush=True,
                )
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
