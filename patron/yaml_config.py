"""Loading YAML rule files into pydantic models, with one-line errors that name the file and key.

Identity, matching and profile rules and the score settings (RFM, CLV, health, lifecycle) are all
YAML documents validated by a pydantic model; they share this loader so a bad file reads the same way whichever rules it holds:
``<file>: <what> key '<dotted.key>': <problem>``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from patron.errors import PatronError

Model = TypeVar("Model", bound=BaseModel)


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML document at ``path``; unreadable or malformed files raise one ``PatronError`` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PatronError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PatronError(f"{path}: {what} are not valid YAML ({exc})".replace("\n", " ")) from None


def read_packaged_yaml(package: str, filename: str) -> Any:
    """The parsed YAML document shipped as ``filename`` inside ``package`` (the defaults)."""
    return yaml.safe_load(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))


def no_repeats(items: list[str]) -> list[str]:
    """``items`` unchanged; a priority list naming an entry twice is ambiguous, so that is a ``ValueError``.

    For pydantic field validators: the message becomes the key's problem in ``validate_document``.
    """
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once")
    return items


def load_document(model: type[Model], path: Path | None, package: str, default_file: str, what: str) -> Model:
    """The settings in the YAML file at ``path`` validated as ``model``, or, when ``path`` is None,
    the defaults shipped as ``default_file`` in ``package``; errors as :func:`validate_document`'s."""
    hint = f"(see {default_file})"
    if path is None:
        return validate_document(model, read_packaged_yaml(package, default_file), default_file, what, hint)
    return validate_document(model, read_yaml(path, what), str(path), what, hint)


def validate_document(model: type[Model], data: Any, source: str, what: str, mapping_hint: str) -> Model:
    """``data`` validated as ``model``; errors name ``source`` and each offending key, joined by '; '.

    ``mapping_hint`` finishes the sentence "<what> must be a YAML mapping ..." shown when the
    document is not a mapping at all (for example an empty file or a bare list).
    """
    if not isinstance(data, dict):
        raise PatronError(f"{source}: {what} must be a YAML mapping {mapping_hint}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            key = ".".join(str(part) for part in error["loc"] if part != "[key]") or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {what} key '{key}': {message}")
        raise PatronError("; ".join(problems)) from None
