"""Vectorised builders for string columns: ids, zero-padded numbers, money, joins.

Millions of generated values must be formatted without a Python loop per value, so fixed-width
values (ids, digits, hex) are written into a ``uint8`` matrix with numpy and handed to Arrow as
the data buffer of a string array; variable-width values are joined with Arrow compute kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Every byte value's two hex digits, as one uint16 so a single gather formats a whole byte.
HEX_PAIRS = np.frombuffer("".join(f"{value:02x}" for value in range(256)).encode(), dtype=np.uint16)


def from_matrix(chars: np.ndarray) -> pa.StringArray:
    """An Arrow string array whose i-th value is row i of an ``(n, width)`` ASCII byte matrix."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64 if n * width >= 2**31 else np.int32)
    kind = pa.large_string() if offsets.dtype == np.int64 else pa.string()
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    array = pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return array.cast(pa.string()) if kind == pa.large_string() else array


def digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded decimal digits, one row of ``width`` bytes per value."""
    rest = np.asarray(values, dtype=np.int64).copy()
    out = np.empty((len(rest), width), dtype=np.uint8)
    for column in range(width - 1, -1, -1):
        out[:, column] = 48 + rest % 10
        rest //= 10
    return out


def literal_matrix(text: str, n: int) -> np.ndarray:
    """``text`` repeated in ``n`` rows, to place between the variable parts of a fixed-width value."""
    return np.broadcast_to(np.frombuffer(text.encode("ascii"), dtype=np.uint8), (n, len(text)))


def padded_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.StringArray:
    """``prefix`` + zero-padded number, e.g. ``SC-004211``."""
    numbers = np.asarray(numbers)
    return from_matrix(np.hstack([literal_matrix(prefix, len(numbers)), digit_matrix(numbers, width)]))


def hex_matrix(raw: np.ndarray) -> np.ndarray:
    """Each byte of an ``(n, k)`` byte matrix as two lower-case hex digits: an ``(n, 2k)`` matrix."""
    return HEX_PAIRS[raw].view(np.uint8).reshape(raw.shape[0], raw.shape[1] * 2)


def random_bytes(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """An ``(n, width)`` matrix of random bytes from ``rng`` (deterministic for a seed)."""
    return np.frombuffer(rng.bytes(n * width), dtype=np.uint8).reshape(n, width).copy()


def hex_ids(rng: np.random.Generator, n: int, prefix: str = "", nbytes: int = 8) -> pa.StringArray:
    """Random ids such as ``anon-3f9c0a1b2c3d4e5f`` (``nbytes`` random bytes in hex)."""
    return from_matrix(np.hstack([literal_matrix(prefix, n), hex_matrix(random_bytes(rng, n, nbytes))]))


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each value (the SplitMix64 finaliser)."""
    z = np.asarray(values, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed_ids(prefix: str, index: np.ndarray, salt: int) -> pa.StringArray:
    """``prefix`` + 32 hex digits derived from (``salt``, ``index``): the same record always gets the same id.

    Ids are a function of the record number rather than a draw from a random stream, so a chunk
    of records renders the same ids however the file is split into chunks.
    """
    index = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        offset = splitmix64(np.array([salt], dtype=np.uint64))[0]
        high = splitmix64(index + offset)
        low = splitmix64(high ^ np.uint64(0x5851F42D4C957F2D))
    raw = np.stack([high.astype(">u8"), low.astype(">u8")], axis=1).view(np.uint8).reshape(len(index), 16)
    return from_matrix(np.hstack([literal_matrix(prefix, len(index)), hex_matrix(raw)]))


def int_strings(values: np.ndarray) -> pa.Array:
    """Integers as their decimal text."""
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def money(cents: np.ndarray) -> pa.Array:
    """Non-negative amounts in cents as ``123.45`` text (two decimals, as exports write them)."""
    cents = np.asarray(cents, dtype=np.int64)
    fraction = int_strings(cents % 100 + 100)
    return join(int_strings(cents // 100), ".", pc.utf8_slice_codeunits(fraction, 1, 3))


def join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of arrays and literal strings (a null part makes a null result)."""
    return pc.binary_join_element_wise(*parts, "")


def pick(words: Sequence[str], index: np.ndarray) -> pa.Array:
    """``words[index[i]]`` for every i, as an Arrow string array."""
    return pa.array(list(words), type=pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def where(mask: np.ndarray, values: pa.Array, otherwise: pa.Array | None = None) -> pa.Array:
    """``values`` where ``mask`` holds, else ``otherwise`` (default: null)."""
    if otherwise is None:
        otherwise = pa.nulls(len(values), type=values.type)
    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), values, otherwise)


def choose(index: np.ndarray, *options: pa.Array) -> pa.Array:
    """Per row, the value of ``options[index[i]]`` (e.g. one of several spellings)."""
    return pc.choose(pa.array(np.asarray(index, dtype=np.int8)), *options)
