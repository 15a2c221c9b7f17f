"""Event log and stream processing: one log interface, an embedded and a Kafka backend."""
