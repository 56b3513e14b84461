"""The ``edgescale`` command line (typer). Each command validates, calls one library
function and says where its output went. Exit codes: 0 ok, 2 invalid input, 1 failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


@app.command()
def run(
    study: Annotated[Path | None, typer.Argument(help="study YAML (default: the built-in default study)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run directory (default: runs/<study name>/)")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="no progress output")] = False,
) -> None:
    """Run a study end to end: train, export, compress, measure, report."""
    from edgescale.pipeline import run_study
    from edgescale.progress import Reporter

    run_dir = run_study(study, out, Reporter(quiet=quiet))
    err.print(f"wrote {run_dir}/results.json, frontier.png, report.html")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="study or recipe YAML files")],
) -> None:
    """Validate study and recipe files without running anything."""
    from edgescale.config import validate_file

    for f in files:
        kind = validate_file(f)
        err.print(f"ok  {f}  ({kind})")


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
