"""Projections: read models folded from the event streams (the unified customer profile first)."""
