"""``edgescale ARGS`` run in the test process, through the same entry point as the console script.

A subprocess pays the interpreter start and every import again (torch alone takes seconds);
where the process boundary is not what a test checks, this runs ``edgescale.cli.main`` here
with typer's stream isolation and gives the same (returncode, stdout, stderr) a subprocess
would: an uncaught exception exits 1 with its traceback on stderr, as Python's would.
A few tests keep a real subprocess for the entry point itself (tests/test_cli.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: object, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> CliResult:
    """Run ``edgescale *args`` in this process (``cwd`` and ``env`` apply for the call only)."""
    from typer.testing import CliRunner

    from edgescale.cli import main

    with CliRunner().isolation(env=dict(env or {})) as (out, err, _), _chdir(cwd), _argv(args):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int | None):
                sys.stderr.write(f"{e.code}\n")
        except Exception:  # what Python prints for an uncaught exception, and its exit code
            traceback.print_exc(file=sys.stderr)
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode(errors="backslashreplace"))


@contextlib.contextmanager
def _chdir(path: Path | None) -> Iterator[None]:
    old = os.getcwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _argv(args: tuple[object, ...]) -> Iterator[None]:
    old = sys.argv
    sys.argv = ["edgescale", *map(str, args)]
    try:
        yield
    finally:
        sys.argv = old
