"""The :class:`SchemaRegistry` protocol over HTTP, for any Confluent-compatible schema registry.

With ``PATRON_REGISTRY=http://host:8081`` Patron shares its schemas and ids with every
other producer and consumer of the Kafka cluster (Confluent's registry, Karapace,
Redpanda's, or Patron's own served by ``patron schemas serve``). It raises what the
embedded registry raises (IncompatibleSchema, InvalidSchema, KeyError), so callers do
not care which one they hold; an unreachable registry is :class:`Unavailable` naming the URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from patron.errors import EXIT_INVALID, PatronError, Unavailable
from patron.schemas.compatibility import InvalidSchema, check_level
from patron.schemas.registry import IncompatibleSchema, RegisteredSchema, schema_text

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
SUBJECT_NOT_FOUND = 40401


class ConfluentRegistry:
    """A Confluent Schema Registry REST client; schemas by id are cached (ids never change meaning)."""

    def __init__(self, url: str, default_compatibility: str = "BACKWARD", timeout: float = 10.0):
        """``default_compatibility`` is the level reported when the server has none for a subject or globally."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PatronError(
                f"registry URL {url!r} is not an http(s):// URL; use e.g. http://localhost:8081", EXIT_INVALID
            )
        self.url = url.rstrip("/")
        self._default = check_level(default_compatibility)
        self._by_id: dict[int, dict[str, Any]] = {}
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={"Accept": f"{MEDIA_TYPE}, application/json", "Content-Type": MEDIA_TYPE},
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: str
    ) -> httpx.Response:
        """Send one request; unreachable or failing servers become Unavailable, other answers are returned."""
        try:
            response = self._http.request(
                method, path, content=orjson.dumps(body) if body is not None else None, params=params or None
            )
        except httpx.TimeoutException:
            raise Unavailable(
                f"schema registry at {self.url} did not answer {method} {path} in time; check that it is up"
            ) from None
        except httpx.TransportError as exc:
            raise Unavailable(
                f"schema registry at {self.url} is unreachable ({exc or type(exc).__name__}); "
                "start it (e.g. `patron schemas serve`) or fix PATRON_REGISTRY / --registry"
            ) from None
        if response.status_code >= 500:
            raise Unavailable(
                f"schema registry at {self.url} failed on {method} {path}: {self._error_text(response)}"
            )
        return response

    @staticmethod
    def _error_code(response: httpx.Response) -> int | None:
        try:
            code = response.json().get("error_code")
        except ValueError:
            return None
        return code if isinstance(code, int) else None

    @staticmethod
    def _error_text(response: httpx.Response) -> str:
        try:
            message = response.json().get("message")
        except ValueError:
            message = None
        return f"HTTP {response.status_code}: {message or response.text[:200] or response.reason_phrase}"

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        """The body of a successful answer; any other answer is a one-line PatronError."""
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise PatronError(
                    f"{self.url} answered {method} {path} with something that is not JSON; "
                    "is it a schema registry?"
                ) from None
        raise PatronError(
            f"schema registry at {self.url} refused {method} {path}: {self._error_text(response)}"
        )

    @staticmethod
    def _subject_path(subject: str) -> str:
        return f"/subjects/{quote(subject, safe='')}"

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        path = f"{self._subject_path(subject)}/versions"
        response = self._request("POST", path, {"schema": schema_text(schema)})
        if response.status_code == 409:
            raise IncompatibleSchema(f"registry at {self.url}: {self._error_text(response)}")
        if response.status_code == 422:
            raise InvalidSchema(
                f"registry at {self.url} refused the schema for {subject!r}: {self._error_text(response)}"
            )
        schema_id = int(self._json(response, "POST", path)["id"])
        self._by_id.setdefault(schema_id, schema)
        return schema_id

    def schema(self, schema_id: int) -> dict[str, Any]:
        found = self._by_id.get(schema_id)
        if found is None:
            path = f"/schemas/ids/{schema_id}"
            response = self._request("GET", path)
            if response.status_code == 404:
                raise KeyError(f"schema id {schema_id} is not in the registry at {self.url}")
            body = self._json(response, "GET", path)
            if body.get("schemaType", "AVRO") != "AVRO":
                raise PatronError(f"schema id {schema_id} at {self.url} is {body['schemaType']}, not Avro")
            found = self._by_id[schema_id] = orjson.loads(body["schema"])
        return found

    def subjects(self) -> list[str]:
        return self._json(self._request("GET", "/subjects"), "GET", "/subjects")

    def versions(self, subject: str) -> list[int]:
        path = f"{self._subject_path(subject)}/versions"
        response = self._request("GET", path)
        if response.status_code == 404:
            return []
        return self._json(response, "GET", path)

    def get(self, subject: str, version: int | None = None) -> RegisteredSchema:
        path = f"{self._subject_path(subject)}/versions/{version or 'latest'}"
        response = self._request("GET", path)
        if response.status_code == 404:
            what = f"version {version} of subject" if version else "subject"
            raise KeyError(f"{what} {subject!r} is not registered at {self.url}")
        body = self._json(response, "GET", path)
        schema = orjson.loads(body["schema"])
        self._by_id.setdefault(int(body["id"]), schema)
        return RegisteredSchema(subject, int(body["version"]), int(body["id"]), schema)

    def check(self, subject: str, schema: dict[str, Any]) -> list[str]:
        path = f"/compatibility{self._subject_path(subject)}/versions"
        response = self._request("POST", path, {"schema": schema_text(schema)}, verbose="true")
        if response.status_code == 404 and self._error_code(response) == SUBJECT_NOT_FOUND:
            return []  # older servers: a subject with no versions has nothing to be incompatible with
        if response.status_code == 422:
            raise InvalidSchema(
                f"registry at {self.url} refused the schema for {subject!r}: {self._error_text(response)}"
            )
        body = self._json(response, "POST", path)
        if body.get("is_compatible"):
            return []
        return list(
            body.get("messages")
            or [f"not compatible with {subject!r} (the registry at {self.url} gave no details)"]
        )

    def compatibility(self, subject: str | None = None) -> str:
        path = f"/config/{quote(subject, safe='')}" if subject else "/config"
        response = self._request("GET", path, defaultToGlobal="true")
        if response.status_code == 404:
            return self.compatibility() if subject else self._default
        return str(self._json(response, "GET", path).get("compatibilityLevel") or self._default)

    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        path = f"/config/{quote(subject, safe='')}" if subject else "/config"
        self._json(self._request("PUT", path, {"compatibility": check_level(level)}), "PUT", path)
