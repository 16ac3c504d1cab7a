"""Errors the user can fix, and the one way every command reports them.

A config value that cannot work, an annotation or model file that cannot be read, a run that
diverged or was stopped: each is a :class:`UserError` whose message names the problem in one
line. Every command runs under :func:`cli_errors`, which prints ``booksegm: error: MESSAGE`` on
stderr, logs it (into the run's log file for the Hydra commands) and exits without a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class UserError(Exception):
    """Input the user can fix, or a stop the user asked for; the message says what and where."""

    exit_code: int | None = None  # the process's exit status; None: the command's own (cli_errors)


@contextmanager
def cli_errors(exit_code: int = 1) -> Iterator[None]:
    """``with cli_errors():`` around a command's body, or ``@cli_errors()`` on its ``main``: a
    UserError ends the process in one line, with the error's exit code, else ``exit_code``."""
    try:
        yield
    except UserError as err:
        if logging.getLogger().handlers:  # without a handler logging prints it to stderr: twice
            log.error("%s", err)
        print(f"booksegm: error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code or exit_code) from None
