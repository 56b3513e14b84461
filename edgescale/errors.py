"""User-facing errors: one message naming the file, the field and what is allowed.

The CLI turns a ``UserError`` into that one message and exit code 2; anything else
is a bug or a runtime failure (exit code 1).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Invalid input from the user (a file, a field, an option)."""

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.detail = message
        where = ": ".join(p for p in (self.file, self.field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class CausalityError(UserError):
    """A model whose outputs at position t depend on tokens after t."""


class EnvironmentFailure(UserError):
    """The machine, not the input: a read-only or full disk, a permission, a link out of the run
    directory. One line and exit 2 like any UserError, but it stops a study: it is never one
    variant's failure (see edgescale.pipeline.is_variant_failure)."""
