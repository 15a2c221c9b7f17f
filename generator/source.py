"""What every generated file is made of: its records, their owners, the events they yield.

A source keeps its records as numpy arrays and renders file columns only for a chunk of record
indices at a time (``render``), so ten million events never sit in memory as Python objects
and duplicates are rendered from the very same arrays (byte-identical re-sends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
import pyarrow as pa

Render = Callable[[np.ndarray], pa.Table]


@dataclass(frozen=True)
class Malformation:
    """One deliberate defect, with the reason ``ground_truth.csv`` states for records that carry it.

    ``apply(table, mask)`` returns the rendered chunk with the rows in ``mask`` broken; a
    malformation without ``apply`` works on the serialised line (a truncated JSON line).
    """

    reason: str
    apply: Callable[[pa.Table, np.ndarray], pa.Table] | None = None


TRUNCATED_LINE = Malformation("broken JSON: the line is truncated")


@dataclass(frozen=True)
class Source:
    """One generated file.

    ``person`` is the true owner of each record, ``events`` says per event type which records
    yield such an event (following the ``when:`` columns of the mapping), ``key`` names the
    column that identifies a record, ``mapping`` is the mapping file content for the file
    connector; files of Segment messages have none and name the ``segment`` connector instead.
    """

    file: str
    person: np.ndarray
    events: dict[str, np.ndarray]
    render: Render
    key: str
    malformations: tuple[Malformation, ...]
    mapping: dict[str, Any] | None
    connector: str = "file"

    @property
    def size(self) -> int:
        return len(self.person)

    @property
    def format(self) -> str:
        return PurePath(self.file).suffix.lstrip(".")

    @property
    def stem(self) -> str:
        return PurePath(self.file).stem
