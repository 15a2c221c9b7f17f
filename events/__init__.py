"""Typed events: models generated from the Avro catalogue, normalisation, wire-format codec."""
