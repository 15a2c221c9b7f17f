"""What a benchmark's numbers depend on, for the record in bench/RESULTS.md.

Every benchmark script prints this next to its table, so a figure is never quoted without the
machine, the date and the versions that produced it.
"""

from __future__ import annotations

import os
import platform
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version


def describe(packages: Iterable[str] = ()) -> dict[str, str]:
    """Date (UTC), CPUs, CPU model, RAM, Python, SQLite and the versions of ``packages``."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "ram": _ram(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(
            [*(f"{name} {_version(name)}" for name in packages), f"SQLite {sqlite3.sqlite_version}"]
        ),
    }


def one_line(info: dict[str, str]) -> str:
    """``describe``'s facts as one sentence-like line."""
    return (
        f"{info['date']}, {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['python']}; "
        f"{info['packages']}"
    )


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _ram() -> str:
    total = _proc_field("/proc/meminfo", "MemTotal")
    return f"{int(total.split()[0]) / 1024**2:.1f} GiB" if total else "unknown"


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
