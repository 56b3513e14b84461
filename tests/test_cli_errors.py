"""Every user error on the command line: exit code 2, one message naming what is wrong, no traceback.

Each invocation runs ``edgescale.cli.main`` in this process (tests/cli_runner.py), which
exits and prints as ``python -m edgescale.cli`` does (tests/test_cli.py checks real processes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import CliResult, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {
        "garbage.onnx": b"\x08\x07garbage, not a protobuf" * 10,
        "empty.onnx": b"",
        "bad.csv": b"n,d\n1,2\n",
        "nan.csv": b"N,D,loss\n1e6,2e7,nan\n",
        "date.yaml": b"name: x\nsteps: []\nwhen: 2001-02-30\n",
        "tagged.yaml": b"name: !!python/object/apply:os.getcwd []\nsteps: []\n",
        "binary.yaml": bytes(range(256)),
        "study.yaml": b"name: s\nladder: {block_size: 32, sizes: [{name: a, n_layer: 1, n_head: 1, n_embd: 16}]}\n",
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    (d / "not_a_run").mkdir()
    return {name: d / name for name in [*files, "not_a_run"]}


def _cli(args: list[str], cwd: Path) -> CliResult:
    return run_cli(*args, cwd=cwd, env={"COLUMNS": "300", "EDGESCALE_DB": str(cwd / "store.db")})


def test_user_errors_exit_2_with_one_message_and_no_traceback(bad_files, tmp_path):
    f = {k: str(v) for k, v in bad_files.items()}
    cases = [  # (argv, what the message must name)
        (["validate", f["garbage.onnx"]], [f["garbage.onnx"], "not a readable ONNX file"]),
        (["validate", f["empty.onnx"], "--target", "nope"], ["--target", "allowed: cpu"]),
        (["export", f["garbage.onnx"], "--out", str(tmp_path / "m.ort")], [f["garbage.onnx"], "not a readable ONNX"]),
        (["export", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "m.ort")], ["missing.onnx", "not found"]),
        (["predict", f["empty.onnx"], "--device", "rpi5-8gb"], [f["empty.onnx"]]),
        (["predict", "--device", "no-such-device", "--params", "1e6", "--bits", "4"], ["--device", "allowed:"]),
        (["predict", "--params", "-1", "--bits", "4", "--device", "rpi5-8gb"], ["--params", "must be positive"]),
        (["fit", f["bad.csv"]], [f["bad.csv"], "missing column(s) loss"]),
        (["fit", f["nan.csv"]], [f["nan.csv"], "line 2", "positive finite number"]),
        (["fit", f["not_a_run"]], [f["not_a_run"], "no results.json"]),
        (["validate", f["date.yaml"]], [f["date.yaml"], "invalid YAML"]),
        (["validate", f["tagged.yaml"]], [f["tagged.yaml"], "invalid YAML"]),
        (["validate", f["binary.yaml"]], [f["binary.yaml"], "cannot read"]),
        (["plan"], ["give --compute, --loss-target"]),
        (["plan", "--compute", "-5"], ["--compute", "must be positive"]),
        (["report", f["not_a_run"]], [f["not_a_run"]]),
        (["calibrate", "--threads", "0"], ["--threads"]),
        (["run", f["study.yaml"], "--executor", "spark"], ["--executor", "allowed: local, ray"]),
        (["run", str(tmp_path / "missing.yaml")], ["missing.yaml", "file not found"]),
        (["run", "--no-such-option"], ["No such option"]),  # typer/click's own usage errors
        (["plan", "--compute", "lots"], ["Invalid value"]),
    ]
    results = [_cli(argv, tmp_path) for argv, _ in cases]
    failures = []
    for (argv, fragments), r in zip(cases, results, strict=True):
        out = r.stderr + r.stdout
        problems = [f"exit {r.returncode}"] if r.returncode != 2 else []
        problems += ["traceback"] if "Traceback" in out else []
        problems += [f"no {frag!r}" for frag in fragments if frag not in out]
        if argv[-1] != "--no-such-option" and "Invalid value" not in fragments:  # ours: exactly one line
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            problems += [] if len(lines) == 1 and lines[0].startswith("error: ") else [f"{len(lines)} lines"]
        if problems:
            failures.append(f"edgescale {' '.join(argv)}: {', '.join(problems)}\n{out[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert not (tmp_path / "m.ort").exists()
