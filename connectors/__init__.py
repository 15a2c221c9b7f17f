"""Source connectors: file ingest, the Segment-compatible HTTP collector, plugins, the dead-letter store."""
