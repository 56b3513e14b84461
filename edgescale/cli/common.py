"""The typer app every command registers on, its stderr console and the entry point."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import typer
from rich.console import Console
from rich.pretty import pprint
from typer.core import TyperCommand

from edgescale.atomic import environment_failure
from edgescale.errors import UserError
from edgescale.ortenv import TELEMETRY_VAR

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="edgescale: the smallest, fastest model that meets your loss target on your device.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)

EXIT_INFEASIBLE = 3  # a target no model can reach: an answer, not an error


class RenamedFlags(TyperCommand):
    """A command whose old flag spellings still parse, for one release, with a warning naming the new one.

    The old spelling is rewritten to the new one before click parses the line, so the command's signature
    and ``--help`` show only the new name, and both spellings give the same parameters."""

    renamed: ClassVar[dict[str, str]] = {}  # old flag -> new flag

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        warned: set[str] = set()
        for i, arg in enumerate(args):
            if arg == "--":  # what follows is an argument, never a flag
                out += args[i:]
                break
            flag, eq, value = arg.partition("=")
            new = self.renamed.get(flag)
            if new is not None:
                if flag not in warned:
                    err.print(f"warning: {flag} is deprecated; use {new}", markup=False)
                    warned.add(flag)
                arg = new + eq + value
            out.append(arg)
        return super().parse_args(ctx, out)


def renamed_flags(renamed: dict[str, str]) -> type[TyperCommand]:
    """The command class for ``@app.command(cls=renamed_flags({"--old": "--new"}))``."""
    return type("RenamedFlags", (RenamedFlags,), {"renamed": dict(renamed)})


def check_range(flag: str, value: float | None, low: float, high: float, unit: str = "", *, above: bool = False):
    """Refuse a command-line number outside ``[low, high]`` (``(low, high]`` with ``above``), NaN and
    infinities included, in one line naming the flag and the range; None (not given) passes."""
    if value is None or ((low < value if above else low <= value) and value <= high):
        return

    def show(x: float) -> str:
        return f"{x:,}" if isinstance(x, int) else f"{x:g}"

    if above and low == 0:
        where = f"positive and at most {show(high)}{unit}"
    else:
        where = f"in {'(' if above else '['}{show(low)}, {show(high)}]{unit}"
    raise UserError(f"must be {where}, got {show(value)}", field=flag)


def _finite(x: Any) -> Any:
    """``x`` with every non-finite float as None, containers rebuilt (JSON has no NaN or Infinity)."""
    if isinstance(x, Mapping):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _number(o: Any) -> Any:
    """What ``json`` cannot write itself: numpy arrays and scalars, as finite numbers or None."""
    if hasattr(o, "tolist"):
        return _finite(o.tolist())
    return _finite(float(o))


def emit(obj: dict, as_json: bool) -> None:
    """Print a command's result: one JSON object, or pretty-printed for a person."""
    if as_json:  # strict JSON: NaN and infinities (e.g. a fit's undefined interval) are null
        typer.echo(json.dumps(_finite(obj), indent=2, default=_number, allow_nan=False))
        return
    pprint(obj, expand_all=True)


def table_console(width: int) -> Console:
    """Stdout for tables: the terminal's width, or ``width`` when piped (so rows are not cut)."""
    return Console(highlight=False, width=None if err.is_terminal else width)


def main() -> None:
    # edgescale makes no network calls: onnxruntime's telemetry is off in this process and every
    # child it starts, whichever library imports onnxruntime first (see edgescale.ortenv).
    os.environ[TELEMETRY_VAR] = "1"
    try:
        app()
    except UserError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None
    except OSError as e:  # a write edgescale does not route through edgescale.atomic: read-only, full, forbidden
        failure = environment_failure(e, e.filename)
        if failure is None:
            raise
        err.print(f"error: {failure}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None
