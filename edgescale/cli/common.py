"""The typer app every command registers on, its stderr console and the entry point."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from edgescale.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="edgescale: the smallest, fastest model that meets your loss target on your device.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)

EXIT_INFEASIBLE = 3  # a target no model can reach: an answer, not an error


def emit(obj: dict, as_json: bool) -> None:
    """Print a command's result: one JSON object, or pretty-printed for a person."""
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=float))
        return
    from rich.pretty import pprint

    pprint(obj, expand_all=True)


def table_console(width: int) -> Console:
    """Stdout for tables: the terminal's width, or ``width`` when piped (so rows are not cut)."""
    return Console(highlight=False, width=None if err.is_terminal else width)


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None
