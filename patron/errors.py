"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes: 0 success; 1 unexpected failure (a bug: please report it); 2 invalid
usage, configuration or input; 3 the command finished but refused something
(rejected records with ``--strict``, an incompatible schema); 4 a service
(broker, registry) could not be reached.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4


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
