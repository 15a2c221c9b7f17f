"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes: 0 success; 1 unexpected failure (a bug: please report it); 2 invalid
usage, configuration or input; 3 the command finished but refused something
(rejected records with ``--strict``, an incompatible schema); 4 a service
(broker, registry) could not be reached; 5 the data directory could not be written (disk full, a
file-size limit, an I/O error).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4
EXIT_STORAGE = 5


class PatronError(Exception):
    """An error with a one-line message saying what was wrong and where, and the fix when known."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Unavailable(PatronError):
    """A backend service did not answer."""

    exit_code = EXIT_UNAVAILABLE


STORAGE_ERRNOS = frozenset({28, 27, 122, 5})
"""ENOSPC (disk full), EFBIG (file too large), EDQUOT (quota), EIO."""
STORAGE_MESSAGES = ("database or disk is full", "disk i/o error")


def storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the disk refused a write (full, over a size limit or quota, failing)."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return True
    return (
        any(text in str(exc).lower() for text in STORAGE_MESSAGES)
        and type(exc).__name__ == "OperationalError"
    )
