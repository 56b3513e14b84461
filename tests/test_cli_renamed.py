"""Old flag spellings keep working for one release: they parse to the same parameters as the new
spelling, with one warning that names the new flag. --help shows only the new names."""

import json

import pytest
import typer
from typer.testing import CliRunner

from edgescale.cli import app

COMMANDS = typer.main.get_command(app).commands

# (command, old flag, new flag, the rest of a valid command line)
RENAMED = [
    ("pick", "--target-loss", "--loss-target-bpb", ["runs/default", "--device", "rpi5-8gb"]),
    ("plan", "--target-loss", "--loss-target", ["--json"]),
    ("predict", "--context", "--decode-context", ["--device", "rpi5-8gb", "--params", "1e9", "--bits", "4.5"]),
    ("predict", "--prompt-tokens", "--prompt-len", ["--device", "rpi5-8gb", "--params", "1e9", "--bits", "4.5"]),
    ("bench", "--context", "--decode-context", ["model.onnx"]),
]


def _params(command: str, args: list[str]) -> dict:
    """The parameters click parses from a command line, without running the command."""
    return dict(COMMANDS[command].make_context(command, list(args)).params)


def test_the_renamed_flags_are_these():
    declared = {(name, old, new) for name, cmd in COMMANDS.items() for old, new in getattr(cmd, "renamed", {}).items()}
    assert declared == {(c, old, new) for c, old, new, _ in RENAMED}


@pytest.mark.parametrize(("command", "old", "new", "rest"), RENAMED, ids=lambda x: x if isinstance(x, str) else "")
def test_old_flag_parses_like_the_new_one_and_warns(command, old, new, rest, capsys):
    expected = _params(command, [*rest, new, "7"])
    assert capsys.readouterr().err == ""
    assert _params(command, [*rest, old, "7"]) == expected
    assert _params(command, [*rest, f"{old}=7"]) == expected
    assert capsys.readouterr().err == f"warning: {old} is deprecated; use {new}\n" * 2
    _params(command, [*rest, old, "7", old, "7"])  # repeated: one warning per command line
    assert capsys.readouterr().err.count("deprecated") == 1


@pytest.mark.parametrize(("command", "old", "new"), sorted({(c, o, n) for c, o, n, _ in RENAMED}))
def test_help_shows_only_the_new_flag(command, old, new):
    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert new in out and old not in out


def test_old_flag_after_double_dash_is_not_rewritten():
    assert _params("bench", ["--", "--context"])["model"].name == "--context"


def test_old_and_new_flag_give_the_same_answer():
    runner = CliRunner()
    new = runner.invoke(app, ["plan", "--loss-target", "2.5", "--json"])
    old = runner.invoke(app, ["plan", "--target-loss", "2.5", "--json"])
    assert new.exit_code == old.exit_code == 0
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert "warning: --target-loss is deprecated; use --loss-target" in old.stderr
