"""Any :class:`SchemaRegistry` served over HTTP with the Confluent Schema Registry REST API.

Kafka-mode deployments need a registry every producer and consumer can reach; serving
Patron's embedded registry with the subset of the Confluent API that serializers,
Kafka Connect converters and ``kcat -s avro`` use lets standard tools and Patron share
one. Schemas travel as JSON text in a ``schema`` field and errors carry Confluent's
``{"error_code": ..., "message": ...}`` body, so those tools see no difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from patron.schemas.compatibility import InvalidSchema, check_compatibility, check_level
from patron.schemas.registry import IncompatibleSchema, RegisteredSchema, SchemaRegistry, schema_text

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"

# Confluent's error codes, so clients that branch on them behave as with Confluent's server.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INCOMPATIBLE = 409
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
INVALID_COMPATIBILITY = 42203
INTERNAL = 50001


class RegistryHTTPError(Exception):
    """A request the registry answers with an error status and a Confluent error body."""

    def __init__(self, status: int, error_code: int, message: str):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _reply(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, media_type=MEDIA_TYPE)


def _error_reply(status: int, error_code: int, message: str) -> JSONResponse:
    return _reply({"error_code": error_code, "message": message}, status)


def _version_of(raw: str) -> int | None:
    """A version path segment: a number from 1, or ``latest`` (also ``-1``, as Confluent allows) as None."""
    if raw in ("latest", "-1"):
        return None
    if raw.isdigit() and 1 <= int(raw) < 2**31:
        return int(raw)
    raise RegistryHTTPError(
        422,
        INVALID_VERSION,
        f"The specified version '{raw}' is not a valid version id. "
        'Allowed values are between [1, 2^31-1] and the string "latest"',
    )


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise RegistryHTTPError(400, 400, f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RegistryHTTPError(400, 400, "request body must be a JSON object")
    return body


async def _schema_of(request: Request) -> Any:
    """The schema a register/lookup/compatibility request carries, as JSON text in ``schema``."""
    body = await _json_body(request)
    schema_type = body.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise RegistryHTTPError(
            422, INVALID_SCHEMA, f"schema type {schema_type!r} is not supported; only AVRO is"
        )
    if body.get("references"):
        raise RegistryHTTPError(
            422,
            INVALID_SCHEMA,
            "schema references are not supported; register the schema with named types inlined",
        )
    text = body.get("schema")
    if not isinstance(text, str):
        raise RegistryHTTPError(
            422, INVALID_SCHEMA, 'the body needs the schema as JSON text in a "schema" field'
        )
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RegistryHTTPError(422, INVALID_SCHEMA, f"the schema is not JSON: {exc}") from None


class _Api:
    """The REST endpoints over one registry; registry calls run in worker threads (they block on SQLite or HTTP)."""

    def __init__(self, registry: SchemaRegistry):
        self.registry = registry

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    async def _versions(self, subject: str) -> list[int]:
        versions = await self._call(self.registry.versions, subject)
        if not versions:
            raise RegistryHTTPError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
        return versions

    async def _registered(self, subject: str, raw_version: str) -> RegisteredSchema:
        version = _version_of(raw_version)
        await self._versions(subject)
        try:
            return await self._call(self.registry.get, subject, version)
        except KeyError:
            raise RegistryHTTPError(404, VERSION_NOT_FOUND, f"Version {raw_version} not found.") from None

    @staticmethod
    def _as_json(found: RegisteredSchema) -> dict[str, Any]:
        return {
            "subject": found.subject,
            "version": found.version,
            "id": found.schema_id,
            "schema": schema_text(found.schema),
        }

    async def root(self, request: Request) -> Response:
        return _reply({})

    async def schema_types(self, request: Request) -> Response:
        return _reply(["AVRO"])

    async def subjects(self, request: Request) -> Response:
        return _reply(await self._call(self.registry.subjects))

    async def versions(self, request: Request) -> Response:
        return _reply(await self._versions(request.path_params["subject"]))

    async def version(self, request: Request) -> Response:
        found = await self._registered(request.path_params["subject"], request.path_params["version"])
        return _reply(self._as_json(found))

    async def version_schema(self, request: Request) -> Response:
        found = await self._registered(request.path_params["subject"], request.path_params["version"])
        return _reply(found.schema)

    async def register(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        schema = await _schema_of(request)
        try:
            schema_id = await self._call(self.registry.register, subject, schema)
        except IncompatibleSchema as exc:
            raise RegistryHTTPError(409, INCOMPATIBLE, str(exc)) from None
        return _reply({"id": schema_id})

    async def lookup(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        text = schema_text(await _schema_of(request))
        for version in await self._versions(subject):
            found = await self._call(self.registry.get, subject, version)
            if schema_text(found.schema) == text:
                return _reply(self._as_json(found))
        raise RegistryHTTPError(404, SCHEMA_NOT_FOUND, f"Schema not found under subject '{subject}'.")

    async def schema_by_id(self, request: Request) -> Response:
        schema_id = request.path_params["schema_id"]
        try:
            schema = await self._call(self.registry.schema, schema_id)
        except KeyError:
            raise RegistryHTTPError(404, SCHEMA_NOT_FOUND, f"Schema {schema_id} not found.") from None
        return _reply({"schema": schema_text(schema)})

    async def compatible_with_all(self, request: Request) -> Response:
        """Against the versions the subject's level names (all of them for ``_TRANSITIVE``), as registering would."""
        subject = request.path_params["subject"]
        schema = await _schema_of(request)
        messages = await self._call(self.registry.check, subject, schema)
        return _reply({"is_compatible": not messages, "messages": messages})

    async def compatible_with_version(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        schema = await _schema_of(request)
        found = await self._registered(subject, request.path_params["version"])
        level = await self._call(self.registry.compatibility, subject)
        messages = check_compatibility(schema, [found.schema], level, versions=[found.version])
        return _reply({"is_compatible": not messages, "messages": messages})

    async def get_config(self, request: Request) -> Response:
        """The level in force: a subject without its own level reports the global one."""
        level = await self._call(self.registry.compatibility, request.path_params.get("subject"))
        return _reply({"compatibilityLevel": level})

    async def put_config(self, request: Request) -> Response:
        body = await _json_body(request)
        try:
            level = check_level(str(body.get("compatibility")))
        except ValueError as exc:
            raise RegistryHTTPError(
                422, INVALID_COMPATIBILITY, f"Invalid compatibility level: {exc}"
            ) from None
        await self._call(self.registry.set_compatibility, level, request.path_params.get("subject"))
        return _reply({"compatibility": level})


async def _registry_error(request: Request, exc: RegistryHTTPError) -> Response:
    return _error_reply(exc.status, exc.error_code, exc.message)


async def _invalid_schema(request: Request, exc: InvalidSchema) -> Response:
    """Any endpoint given a schema that is not valid Avro answers as Confluent's registry does."""
    return _error_reply(422, INVALID_SCHEMA, str(exc))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error_reply(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _error_reply(500, INTERNAL, f"{type(exc).__name__}: {exc}")


def create_app(registry: SchemaRegistry) -> Starlette:
    """The ASGI app serving ``registry``; run it with uvicorn (``patron schemas serve``)."""
    api = _Api(registry)
    routes = [
        Route("/", api.root),
        Route("/schemas/types", api.schema_types),
        Route("/schemas/ids/{schema_id:int}", api.schema_by_id),
        Route("/subjects", api.subjects),
        Route("/subjects/{subject}", api.lookup, methods=["POST"]),
        Route("/subjects/{subject}/versions", api.versions, methods=["GET"]),
        Route("/subjects/{subject}/versions", api.register, methods=["POST"]),
        Route("/subjects/{subject}/versions/{version}", api.version),
        Route("/subjects/{subject}/versions/{version}/schema", api.version_schema),
        Route("/compatibility/subjects/{subject}/versions", api.compatible_with_all, methods=["POST"]),
        Route(
            "/compatibility/subjects/{subject}/versions/{version}",
            api.compatible_with_version,
            methods=["POST"],
        ),
        Route("/config", api.get_config, methods=["GET"]),
        Route("/config", api.put_config, methods=["PUT"]),
        Route("/config/{subject}", api.get_config, methods=["GET"]),
        Route("/config/{subject}", api.put_config, methods=["PUT"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            RegistryHTTPError: _registry_error,
            InvalidSchema: _invalid_schema,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
