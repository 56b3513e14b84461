"""Hostile or unlucky input to the ONNX, device and planning commands (issue 17, cases 5 and 14):
one error line and exit 2, or a valid result, never a traceback.

Each invocation runs ``edgescale.cli.main`` in this process (tests/cli_runner.py), which exits
and prints as the console script does; one case runs in a real process as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import CliResult, run_cli


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    """A GPT exported with block_size 32, a fake Identity "LM", a graph with no nodes, a 0-byte file."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    from edgescale.export.onnx import export_onnx
    from edgescale.models.gpt import GPT
    from edgescale.models.shape import GPTConfig

    d = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    export_onnx(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32)), d / "bs32.onnx")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    logits = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", "seq"])
    fake = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "fake", [ids], [logits])
    onnx.save(helper.make_model(fake, opset_imports=[helper.make_opsetid("", 18)]), d / "identity.onnx")
    empty = helper.make_graph([], "empty", [], [])
    onnx.save(helper.make_model(empty, opset_imports=[helper.make_opsetid("", 18)]), d / "no_nodes.onnx")
    (d / "zero.onnx").write_bytes(b"")
    return {p.stem: p for p in d.glob("*.onnx")}


def _cli(*args: object, cwd: Path) -> CliResult:
    return run_cli(*args, cwd=cwd, env={"COLUMNS": "300", "EDGESCALE_DB": str(cwd / "store.db")})


def _refused(r: CliResult, *fragments: str) -> str:
    """Exit 2, exactly one ``error:`` line on stderr holding every fragment, no traceback; the line."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr + r.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    return lines[0]


def test_bench_defaults_follow_the_models_context(onnx_files, tmp_path):
    r = _cli("bench", onnx_files["bs32"], "--repeats", "3", "--max-tokens", "256", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert (out["latency"]["prompt_len"], out["latency"]["decode_context"]) == (32, 32)  # not 64 and 128
    assert out["loss"]["context_length"] == 32 and out["loss"]["stride"] <= 32  # the study's 128 would overrun


def test_predict_defaults_follow_the_models_context(onnx_files, tmp_path):
    r = _cli("predict", onnx_files["bs32"], "--device", "rpi5-8gb", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert (out["decode_context"], out["prompt_len"]) == (32, 32)  # not 512 and 128


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--no-loss", "--decode-context", "64"],
        ["bench", "--no-loss", "--prompt-len", "33"],
        ["predict", "--device", "rpi5-8gb", "--decode-context", "33"],
        ["predict", "--device", "rpi5-8gb", "--prompt-len", "512"],
    ],
)
def test_a_length_past_the_models_context_is_one_error(onnx_files, tmp_path, argv):
    flag = argv[-2]
    _refused(_cli(argv[0], onnx_files["bs32"], *argv[1:], cwd=tmp_path), flag, "at most 32", "bs32.onnx")


@pytest.mark.parametrize(
    ("argv", "flag", "allowed"),
    [
        (["plan", "--compute", "1e400"], "--compute", "at most 1e+40"),  # parses as inf
        (["plan", "--compute", "1e60"], "--compute", "at most 1e+40"),
        (["plan", "--compute", "nan"], "--compute", "at most 1e+40"),
        (["plan", "--loss-target", "1e300"], "--loss-target", "at most 100"),
        (["plan", "--compute", "1e20", "--utilisation", "0"], "--utilisation", "at most 1"),
        (["predict", "--params", "1e30", "--bits", "4", "--device", "rpi5-8gb"], "--params", "at most 5e+11"),
        (["predict", "--params", "inf", "--bits", "4", "--device", "rpi5-8gb"], "--params", "at most 5e+11"),
        (["predict", "--params", "1e9", "--bits", "4", "--kv-bits", "1e300", "--device", "rpi5-8gb"], "--kv-bits", ""),
    ],
)
def test_huge_and_non_finite_numbers_are_one_error_naming_the_range(tmp_path, argv, flag, allowed):
    _refused(_cli(*argv, cwd=tmp_path), flag, "must be positive", allowed)


def test_an_infinite_budget_in_a_real_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "edgescale.cli", "plan", "--compute", "1e400"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    _refused(CliResult(r.returncode, r.stdout, r.stderr), "--compute", "got inf")


def test_the_old_target_loss_flag_is_refused_alike(tmp_path):
    r = _cli("plan", "--target-loss", "1e300", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --loss-target: must be positive and at most 100")


def test_a_compute_budget_past_every_shape_is_a_plan_without_one(tmp_path):
    r = _cli("plan", "--compute", "1e30", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads(r.stdout)
    assert plan["status"] == "ok" and plan["shape"] is None and plan["n_params"] > 1e13
    assert any("no GPT shape" in n for n in plan["notes"])


def test_a_loss_target_above_any_models_loss_still_plans_at_least_one_parameter(tmp_path):
    r = _cli("plan", "--loss-target", "100", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["n_params"] >= 1


def test_calibrate_refuses_an_unwritable_out_before_measuring(tmp_path):
    line = _refused(_cli("calibrate", "--out", tmp_path / "missing" / "cal.yaml", cwd=tmp_path), "--out", "missing")
    assert "does not exist" in line
    _refused(_cli("calibrate", "--out", tmp_path, cwd=tmp_path), "--out", "is a folder")


@pytest.mark.parametrize("command", ["bench", "predict", "quantize"])
def test_every_command_on_a_model_refuses_a_fake_identity_graph_alike(onnx_files, tmp_path, command):
    extra = {"predict": ["--device", "rpi5-8gb"], "quantize": ["--recipe", "int8_dynamic"], "bench": ["--no-loss"]}
    out = tmp_path / "q.onnx"
    args = [*extra[command], *(["--out", out] if command == "quantize" else [])]
    _refused(_cli(command, onnx_files["identity"], *args, cwd=tmp_path), "identity.onnx", "not a causal LM")
    assert not out.exists()


@pytest.mark.parametrize(("name", "why"), [("no_nodes", "the graph has no nodes"), ("zero", "empty file (0 bytes)")])
def test_validate_an_empty_model_says_so(onnx_files, tmp_path, name, why):
    line = _refused(_cli("validate", onnx_files[name], cwd=tmp_path), f"{name}.onnx", why)
    assert "cannot run" not in line


OK_CSV = "N,D,loss\n1e6,2e7,3.0\n2e6,4e7,2.8\n4e6,8e7,2.6\n8e6,1.6e8,2.5\n1.6e7,3.2e8,2.4\n3.2e7,6.4e8,2.35\n"


@pytest.mark.parametrize(
    ("argv", "flag", "allowed"),
    [
        (["--bootstrap", "-5"], "--bootstrap", "[0, 10,000]"),
        (["--bootstrap", "1000000000"], "--bootstrap", "[0, 10,000]"),  # allocated 44.7 GiB
        (["--seed", "-1"], "--seed", "[0, 4,294,967,295]"),
        (["--seed", "100000000000000000000000"], "--seed", "[0, 4,294,967,295]"),
    ],
)
def test_fit_numbers_out_of_range_are_one_error_naming_the_range(tmp_path, argv, flag, allowed):
    (tmp_path / "ok.csv").write_text(OK_CSV)
    line = _refused(_cli("fit", tmp_path / "ok.csv", *argv, cwd=tmp_path), f"{flag}: ", allowed)
    assert f"got {int(argv[1]):,}" in line


@pytest.mark.parametrize(
    ("argv", "flag", "allowed"),
    [
        (["--max-tokens", "-5"], "--max-tokens", "[1, "),
        (["--threads", "100000"], "--threads", "[1, "),  # hung creating the threads
        (["--threads", "-1"], "--threads", "[1, "),  # the message talked about repeats
        (["--repeats", "100000000000"], "--repeats", "[3, 10,000]"),  # hung over 60 s
        (["--repeats", "-1"], "--repeats", "got -1"),  # reported "got -3"
        (["--prompt-len", "0"], "--prompt-len", "[1, "),
        (["--decode-context", "1"], "--decode-context", "[2, "),
    ],
)
def test_bench_numbers_out_of_range_are_one_error_naming_the_flag(onnx_files, tmp_path, argv, flag, allowed):
    line = _refused(_cli("bench", onnx_files["bs32"], "--no-loss", *argv, cwd=tmp_path), f"{flag}: must be in", allowed)
    assert "repeats" not in line or flag == "--repeats", line


@pytest.mark.parametrize(
    ("argv", "flag", "allowed"),
    [
        (["plan", "--compute", "1e-30"], "--compute", "[1e+09, 1e+40] FLOPs"),  # planned 2e-17 parameters
        (["plan", "--loss-target", "3", "--law", "fit:x.csv", "--bootstrap", "1000000000"], "--bootstrap", "10,000"),
        (["plan", "--compute", "1e20", "--bootstrap", "5"], "--bootstrap", "[20, 10,000]"),
        (["pick", ".", "--loss-target-bpb", "2", "--served-tokens", "-1"], "--served-tokens", "[0, 1e+30]"),
        (["pick", ".", "--loss-target-bpb", "2", "--served-tokens", "nan"], "--served-tokens", "[0, 1e+30]"),
    ],
)
def test_plan_and_pick_lower_bounds_are_one_error(tmp_path, argv, flag, allowed):
    _refused(_cli(*argv, cwd=tmp_path), f"{flag}: must be in", allowed)


def test_the_smallest_allowed_budget_still_plans(tmp_path):
    r = _cli("plan", "--compute", "1e9", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["n_params"] > 100
