"""The line between a user's mistake and a bug.

A ``UserError`` is something the user can fix (a missing root, an empty split, an output that
holds another run, a bad input file); its message names the file, field or setting at fault.
Every job runs through ``distill.config.run_job``, which prints such an error as one line and
exits 2; anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input, config or data; the message says what to change."""


class DataError(UserError, ValueError):
    """The data or output a job was pointed at does not fit the job (an empty split, an output
    holding another run, reports that cannot be pooled). A ``ValueError`` too, for callers that
    caught that before user errors had their own class."""


class MissingInputError(UserError, FileNotFoundError):
    """A root, file or checkpoint the config names does not exist (or is incomplete)."""
