"""The command line: user errors are one line and exit code 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=None):
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
    for path, fragment in ((bad_yaml, "invalid YAML"), (unknown_op, "steps.0.op: unknown op 'prune.everything'")):
        r = _cli("validate", path)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and fragment in r.stderr and str(path) in r.stderr
    r = _cli("run", tmp_path / "missing.yaml", "--out", tmp_path / "out")
    assert r.returncode == 2 and "file not found" in r.stderr and not (tmp_path / "out").exists()


def test_help_everywhere():
    for args in ((), ("run",), ("validate",)):
        r = _cli(*args, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout
