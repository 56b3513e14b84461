"""Recipe rules: invalid orders and settings are refused at load time, naming the steps — and each rule is real.

The "is real" tests run the refused chain anyway (step by step, bypassing the loader) and
show what would have happened: a graph onnxruntime cannot load, or a second quantizer that
silently does nothing.
"""

import subprocess
import sys

import pytest

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.onnx_graph import op_counts
from edgescale.compress.recipe import compile_chain
from edgescale.compress.registry import StepContext, registry
from edgescale.config import Recipe
from edgescale.errors import UserError


def _compile(*steps):
    return compile_chain(Recipe(name="r", steps=[s if isinstance(s, dict) else {"op": s} for s in steps]), "r.yaml")


def _run(path, ops, tmp_path, corpus):
    for i, op in enumerate(ops):
        sd = registry()[op]
        work = tmp_path / f"{i}-{op}"
        work.mkdir()
        path = sd.fn(path, sd.config(), StepContext(work, log=lambda m: None, corpus=corpus))
    return path


def test_static_quantization_without_calibration_data_is_refused():
    with pytest.raises(UserError, match="quantize.int8_static has no calibration data") as e:
        _compile({"op": "quantize.int8_static", "calibration_windows": 0})
    assert (e.value.file, e.value.field) == ("r.yaml", "steps.0.calibration_windows")


@pytest.mark.parametrize(
    ("ops", "fragment"),
    [
        (
            ["quantize.int4_weight_only", "quantize.int8_static"],
            "quantize.int8_static (steps.1) comes after quantize.int4_weight_only (steps.0)",
        ),
        (["quantize.int8_dynamic", "quantize.int4_weight_only"], "already quantized the weight MatMuls"),
        (["quantize.int8_dynamic", "quantize.int8_dynamic"], "keep one weight quantization"),
        (
            ["quantize.fp16", "quantize.int8_static"],
            "quantize.int8_static (steps.1) cannot follow quantize.fp16 (steps.0)",
        ),
        (["quantize.int8_dynamic", "quantize.fp16"], "quantize.fp16 (steps.1) cannot follow quantize.int8_dynamic"),
    ],
)
def test_invalid_orders_name_both_steps(ops, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as e:
        _compile(*ops)
    assert e.value.field == "steps.1.op"


def test_valid_combinations_pass():
    for ops in (
        ["quantize.int4_weight_only", "quantize.fp16"],
        ["quantize.fp16", "quantize.int4_weight_only"],
        ["optimize.graph", "quantize.int8_static"],
        ["quantize.int8_static", "optimize.graph"],
    ):
        assert [s.op for s in _compile(*ops).steps] == ["export.onnx", *ops]


def test_fp16_then_int8_really_gives_a_graph_onnxruntime_cannot_load(tiny_onnx, corpus, tmp_path):
    out = _run(tiny_onnx, ["quantize.fp16", "quantize.int8_dynamic"], tmp_path, corpus)
    with pytest.raises(UserError, match="onnxruntime cannot load this model"):
        OrtCausalLM(out)


def test_int8_after_int4_really_finds_nothing_to_quantize(tiny_onnx, corpus, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    int4 = _run(tiny_onnx, ["quantize.int4_weight_only"], first, corpus)
    both = _run(int4, ["quantize.int8_static"], second, corpus)
    before, after = op_counts(int4), op_counts(both)
    assert after["com.microsoft:MatMulNBits"] == before["com.microsoft:MatMulNBits"]
    assert "QLinearMatMul" not in after  # every weight MatMul was already MatMulNBits


def test_validate_command_names_the_steps(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\nsteps:\n  - op: quantize.int4_weight_only\n  - op: quantize.int8_dynamic\n")
    r = subprocess.run(
        [sys.executable, "-m", "edgescale.cli", "validate", str(recipe)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{recipe}: steps.1.op: quantize.int8_dynamic (steps.1) comes after quantize.int4_weight_only" in r.stderr


def test_recipe_target_names_an_execution_provider(tmp_path):
    from edgescale.compress.recipe import load_recipe_file

    path = tmp_path / "r.yaml"
    path.write_text("name: r\ntarget: {execution_provider: FastestExecutionProvider}\nsteps: []\n")
    with pytest.raises(UserError, match="CPUExecutionProvider") as e:
        load_recipe_file(path)
    assert e.value.field == "target.execution_provider"
    path.write_text("name: r\nsteps: []\n")
    assert load_recipe_file(path).target.execution_provider == "CPUExecutionProvider"  # the default
