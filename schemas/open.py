"""Open the registry the settings name: embedded file-backed, or Confluent-compatible over HTTP."""

from __future__ import annotations

from patron.config import Settings
from patron.schemas.registry import FileRegistry, SchemaRegistry


def open_registry(settings: Settings) -> SchemaRegistry:
    """``PATRON_REGISTRY=http(s)://...`` selects the HTTP client; otherwise ``DATA/registry.db``."""
    if settings.registry_url:
        from patron.schemas.confluent import ConfluentRegistry

        return ConfluentRegistry(settings.registry_url, default_compatibility=settings.compatibility)
    return FileRegistry(settings.path("registry.db"), default_compatibility=settings.compatibility)
