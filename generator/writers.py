"""Writing a source to its file in chunks, with its dirt applied, and its rows of ground truth.

Records are rendered ``CHUNK`` at a time in file order (re-sends included), broken where the
dirt plan says so, serialised as CSV, JSON lines or Parquet, and reported to the ground truth
with their true owner. The chunk size is fixed, so the output never depends on the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from patron.generator.dirt import DirtPlan
from patron.generator.jsonl import json_lines
from patron.generator.source import Source
from patron.generator.textcols import int_strings, join, pick, where

CHUNK = 200_000
TRUNCATE_CHARS = 9
TRUTH_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("record", pa.int64()),
        ("key", pa.string()),
        ("person_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
    ]
)


class GroundTruth:
    """``ground_truth.csv``: per record of every file, its key, true person and what is wrong with it.

    ``record`` is the 1-based data row (CSV, header excluded), line (JSON lines) or row (Parquet).
    """

    def __init__(self, path: Path):
        # Keys, ids and reasons never contain a comma or a quote, so nothing needs quoting.
        options = pcsv.WriteOptions(quoting_style="none")
        self._writer = pcsv.CSVWriter(path, TRUTH_SCHEMA, write_options=options)

    def add(self, rows: list[pa.Array]) -> None:
        self._writer.write_table(pa.Table.from_arrays(rows, schema=TRUTH_SCHEMA))

    def close(self) -> None:
        self._writer.close()


class _FileSink:
    """Appends rendered chunks to one file in the source's format."""

    def __init__(self, path: Path, file_format: str):
        self.path, self.format = path, file_format
        self._writer: pcsv.CSVWriter | pq.ParquetWriter | None = None
        self._handle: BinaryIO | None = None

    def write(self, table: pa.Table, truncated: np.ndarray) -> None:
        if self.format == "jsonl":
            lines = json_lines(table)
            if truncated.any():
                mask = pa.array(truncated)
                cut = join(pc.utf8_slice_codeunits(lines.filter(mask), 0, -TRUNCATE_CHARS - 1), "\n")
                lines = pc.replace_with_mask(lines, mask, cut)
            if self._handle is None:
                self._handle = self.path.open("wb")
            self._handle.write(_text_bytes(lines))
        elif self.format == "csv":
            if self._writer is None:
                options = pcsv.WriteOptions(quoting_style="needed")
                self._writer = pcsv.CSVWriter(self.path, table.schema, write_options=options)
            self._writer.write_table(table)
        else:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._handle is not None:
            self._handle.close()


def _text_bytes(text: pa.Array) -> pa.Buffer | bytes:
    """The bytes of all values of a string array back to back, without a copy per value."""
    if len(text) == 0:
        return b""
    text = text.cast(pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)
    start, end = int(offsets[text.offset]), int(offsets[text.offset + len(text)])
    return text.buffers()[2].slice(start, end - start)


def write_source(
    source: Source,
    plan: DirtPlan,
    path: Path,
    person_ids: pa.Array,
    truth: GroundTruth,
    advance: Callable[[int], None],
) -> None:
    """Write every record of ``source`` in ``plan`` order to ``path`` and its ground truth.

    Serialising and writing a chunk runs on a second thread while the next chunk is rendered
    (Arrow kernels and file writes release the GIL), with at most one chunk in flight.
    """
    reasons = [m.reason for m in source.malformations]
    line_level = np.array([m.apply is None for m in source.malformations] + [False])
    sink = _FileSink(path, source.format)

    def flush(table: pa.Table, truncated: np.ndarray, truth_rows: list[pa.Array]) -> None:
        sink.write(table, truncated)
        truth.add(truth_rows)
        advance(len(truncated))

    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            for begin in range(0, max(len(plan.order), 1), CHUNK):
                positions = np.arange(begin, min(begin + CHUNK, len(plan.order)))
                records = plan.order[positions]
                table = source.render(records)
                key = table.column(source.key).combine_chunks()
                kind = plan.kind[records]
                for index, malformation in enumerate(source.malformations):
                    mask = kind == index
                    if malformation.apply is not None and mask.any():
                        table = malformation.apply(table, mask)
                copy_of = plan.duplicate_of[positions]
                is_copy = copy_of >= 0
                status = np.where(kind >= 0, 2, np.where(is_copy, 1, 0))
                truth_rows = [
                    pa.array(np.full(len(positions), source.file)),
                    pa.array(positions + 1),
                    key.cast(pa.string()),
                    person_ids.take(pa.array(source.person[records])),
                    pick(("ok", "duplicate", "malformed"), status),
                    where(kind >= 0, pick([*reasons, ""], np.where(kind >= 0, kind, len(reasons)))),
                    where(is_copy, int_strings(copy_of + 1)),
                ]
                if pending is not None:
                    pending.result()
                pending = pool.submit(flush, table, line_level[kind], truth_rows)
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                pending.exception()
            sink.close()
