"""The command line: user errors are one line and exit code 2, never a traceback.

Commands run in this process (tests/cli_runner.py); the entry point itself, ``python -m
edgescale.cli``, is checked in real processes (``_process``)."""

import subprocess
import sys
from pathlib import Path

from cli_runner import run_cli

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=None):
    return run_cli(*args, cwd=cwd)


def _process(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "edgescale.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_validate_ok_on_shipped_files():
    r = _cli("validate", REPO / "studies" / "default.yaml", REPO / "recipes" / "int8_dynamic.yaml")
    assert r.returncode == 0, r.stderr
    assert "(study)" in r.stderr and "(recipe)" in r.stderr


def test_bad_inputs_exit_2_with_one_message(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    unknown_op = tmp_path / "recipe.yaml"
    unknown_op.write_text("name: r\nsteps:\n  - op: prune.everything\n")
    for path, fragment, cli in (
        (bad_yaml, "invalid YAML", _process),  # the exit code of a real process
        (unknown_op, "steps.0.op: unknown op 'prune.everything'", _cli),
    ):
        r = cli("validate", path)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and fragment in r.stderr and str(path) in r.stderr
    r = _cli("run", tmp_path / "missing.yaml", "--out", tmp_path / "out")
    assert r.returncode == 2 and "file not found" in r.stderr and not (tmp_path / "out").exists()


def test_help_everywhere():
    for args in ((), ("run",), ("validate",)):
        r = _process(*args, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout


# Commands that read files, plan or predict: none of them needs torch, and each would pay
# seconds of import for it. (validate and recipes do import it: the step registry imports the
# technique modules, which import torch; validate reads any YAML through that registry.)
_TORCH_FREE = r"""
import sys
from typer.testing import CliRunner
from edgescale.cli import app

r = CliRunner().invoke(app, sys.argv[1:])
assert r.exit_code in (0, 3), (r.output, r.exception)
print("torch" in sys.modules)
"""


def _imports_torch(args: list[str]) -> bool:
    """Whether ``edgescale ARGS``, run in a fresh process, imported torch."""
    r = subprocess.run([sys.executable, "-c", _TORCH_FREE, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[-1] == "True"


def test_planning_and_profile_commands_do_not_import_torch(tmp_path):
    csv = tmp_path / "points.csv"
    csv.write_text("N,D,loss\n" + "".join(f"{n},{20 * n},{2 + 400 / n**0.3}\n" for n in (1e6, 3e6, 1e7, 3e7, 1e8)))
    commands = [
        ["plan", "--compute", "1e18", "--json"],
        ["fit", str(csv), "--json", "--bootstrap", "5"],
        ["predict", "--params", "1e8", "--bits", "4", "--device", "rpi5-8gb", "--json"],
        ["devices", "--json"],
        ["runs", "--db", str(tmp_path / "store.db"), "--json"],
    ]
    assert [c for c in commands if _imports_torch(c)] == []
    assert _imports_torch(["recipes", "--json"])  # the check sees an import when there is one


def test_commands_on_a_finished_run_do_not_import_torch(tiny_run, tmp_path):
    _, run_dir, db = tiny_run
    commands = [
        ["fit", str(run_dir), "--json", "--bootstrap", "5"],
        ["runs", "--db", str(db), "--json"],
        ["pick", str(run_dir), "--loss-target-bpb", "6.0", "--device", "rpi5-8gb", "--json"],
        ["compare", str(run_dir), "--json"],
        ["report", str(run_dir), "--out", str(tmp_path / "report")],
    ]
    assert [c for c in commands if _imports_torch(c)] == []
