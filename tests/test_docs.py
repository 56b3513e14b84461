"""Every command the README and docs/*.md show exists and parses with the real CLI; the cheap ones run.

What counts as a shown command: a line of a fenced ``bash`` block, or an inline code span, that starts
with ``edgescale `` or ``python3 dev.py`` (and ``.venv/bin/python benchmarks/...`` lines, whose script
must exist). An inline span is a reference in prose (``edgescale fit``): its command and flags must
exist; a fenced line must also parse. The docs' conventions, which this test relies on:

- placeholders are in capitals (``RUN_DIR``, ``STUDY.yaml``, ``MODEL.onnx``, ``FILE``, ``X``); they are
  passed through as they are (paths and names parse without existing), and a bracketed option whose
  value is a placeholder is only checked to exist, not parsed;
- ``[...]`` marks an optional part; ``a|b`` lists alternatives (the first is parsed); ``FILE...`` and
  ``...`` mean "more of the same";
- ``# ...`` ends a command (a comment).

Each command line is parsed by click exactly as the shell would hand it over, without running the command
(``make_context``); a flag that does not exist, a deprecated spelling, a missing argument or a value of the
wrong type fails the test. Commands in RUNNABLE (fast, no files needed) also run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgescale.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = typer.main.get_command(app).commands
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$")
# Commands that take well under a second or two and need no run directory or model: they run for real.
RUNNABLE = re.compile(r"^edgescale (devices|recipes|plan|validate (studies|recipes|devices)/|predict --device)")


def _shown_commands() -> list[tuple[str, str]]:
    """(where, command) for every command the docs show."""
    out = []
    for doc in DOCS:
        in_bash = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("```"):
                in_bash = line.strip() == "```bash" and not in_bash
                continue
            candidates = [line] if in_bash else re.findall(r"`([^`]+)`", line)
            for c in candidates:
                c = c.split(" #")[0].strip()
                if c.startswith(("edgescale ", "python3 dev.py", ".venv/bin/python benchmarks/")):
                    out.append((f"{doc.relative_to(REPO)}:{n}", c if in_bash else f"`{c}`"))
    return out


SHOWN = _shown_commands()


def _split(command: str) -> tuple[list[str], list[list[str]]]:
    """The mandatory tokens and the optional [groups] of a shown command (alternatives: the first)."""
    required: list[str] = []
    groups: list[list[str]] = []
    for part in re.split(r"(\[[^\]]*\])", command):
        tokens = [t.split("|")[0].removesuffix("...") for t in shlex.split(part.strip("[]"))]
        tokens = [t for t in tokens if t]
        if part.startswith("["):
            groups.append(tokens)
        else:
            required += tokens
    return required, groups


def _flags(command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def _parse(name: str, args: list[str]) -> None:
    COMMANDS[name].make_context(name, list(args))


def test_the_docs_show_commands():
    assert len(SHOWN) >= 30
    assert any(c.startswith("edgescale pick") for _, c in SHOWN)


@pytest.mark.parametrize(("where", "command"), SHOWN, ids=[w for w, _ in SHOWN])
def test_shown_command_exists_and_parses(where, command):
    inline = command.startswith("`")  # a reference in prose, e.g. `edgescale fit`: names and flags must exist
    command = command.strip("`")
    if command.startswith("python3 dev.py"):
        sub = command.split()[2] if len(command.split()) > 2 else ""
        assert f"python3 dev.py {sub} " in (REPO / "dev.py").read_text(), f"{where}: no dev.py {sub!r}"
        return
    if command.startswith(".venv/bin/python"):
        assert (REPO / command.split()[1]).is_file(), f"{where}: no such script"
        return
    required, groups = _split(command)
    name = required[1]
    assert name in COMMANDS, f"{where}: no command {name!r}"
    known = _flags(COMMANDS[name])
    for token in [t for group in groups for t in group] + required[2:]:
        if token.startswith("-"):
            assert token.split("=")[0] in known, f"{where}: {name} has no option {token}"
    if inline:
        return
    _parse(name, required[2:])
    for group in groups:
        if not any(PLACEHOLDER.match(t) for t in group[1:]):
            _parse(name, required[2:] + group)


def test_a_flag_that_does_not_exist_fails_the_check():
    with pytest.raises(AssertionError, match="has no option --no-such-flag"):
        test_shown_command_exists_and_parses("x.md:1", "edgescale pick RUN_DIR [--no-such-flag 3]")
    with pytest.raises(AssertionError, match="has no option --target-loss"):  # a deprecated spelling
        test_shown_command_exists_and_parses("x.md:1", "edgescale pick RUN_DIR --target-loss 3.3")
    with pytest.raises(Exception, match="valid number"):  # a value of the wrong type
        test_shown_command_exists_and_parses("x.md:1", "edgescale plan --loss-target lots")


def _runnable() -> list[list[str]]:
    """The mandatory part of each RUNNABLE command that names no placeholder."""
    out = {tuple(_split(c)[0][1:]) for _, c in SHOWN if RUNNABLE.match(c)}  # inline ones start with `
    return sorted(list(args) for args in out if not any(PLACEHOLDER.match(t) for t in args))


@pytest.mark.parametrize("args", _runnable(), ids=" ".join)
def test_runnable_command_runs(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
