"""`auto` quantization settings: resolved per ISA by onnxruntime's documented rules, never slower than
today's defaults, recorded with the reason, and runnable from a recipe on a tiny GPT."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgescale.chain import ChainStart, ScratchStore, run_chain
from edgescale.compress.int4 import Int4WeightOnlyConfig, accuracy_level_for, matmul_nbits_nodes
from edgescale.compress.isa import TargetIsa, resolution_key, resolve_int4, resolve_int8, target_isa
from edgescale.compress.onnx_graph import load
from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
from edgescale.compress.recipe import compile_chain
from edgescale.compress.registry import Chain, StepContext
from edgescale.config import Recipe, RecipeTarget
from edgescale.errors import UserError
from edgescale.export.canonical import file_sha256
from edgescale.hf.onnx_file import OnnxFileBackend
from edgescale.progress import Reporter

AVX2 = frozenset({"avx2"})  # Haswell..Skylake client: no VNNI
AVX512_VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
ARM_DOT = frozenset({"neon", "fp16", "dotprod"})  # Cortex-A76 (rpi5)
ARM_I8MM = frozenset({"neon", "fp16", "dotprod", "i8mm", "bf16"})  # Cortex-X3 (pixel8)
ARM_PLAIN = frozenset({"neon"})  # Cortex-A72 (rpi4): no dot product
# today's defaults, which `auto` may never be slower than
TODAY_INT8 = {"weight_type": "qint8", "per_channel": False, "reduce_range": False}


@pytest.mark.parametrize(
    ("isa", "reduce_range", "why"),
    [
        (AVX2, True, "x86 without VNNI"),
        (AVX512_VNNI, False, "x86 with VNNI (int8 dot: avx512_vnni)"),
        (ARM_DOT, False, "Arm with dot product (int8 dot: dotprod)"),
        (ARM_I8MM, False, "Arm with dot product (int8 dot: dotprod+i8mm)"),
        (ARM_PLAIN, False, "Arm without dot product"),
    ],
)
def test_int8_rules_per_isa(isa, reduce_range, why):
    for mode in ("dynamic", "static"):
        choice = resolve_int8(isa, mode, "test")
        # the only departure from today's defaults: 7-bit weights where u8s8 saturates (the same kernel)
        assert choice.values["reduce_range"] is reduce_range
        assert choice.values["weight_type"] == "qint8" and choice.values["per_channel"] is False  # u8u8 is slower
        assert choice.values.get("activation_type", "quint8") == "quint8"
        assert why in choice.why
    assert "saturate" in resolve_int8(AVX2, "dynamic").why
    assert "without saturation" in resolve_int8(AVX512_VNNI, "dynamic").why


@pytest.mark.parametrize(
    ("isa", "why"),
    [
        (AVX2, "x86 without VNNI"),
        (AVX512_VNNI, "x86 with VNNI"),
        (ARM_DOT, "Arm with dot product"),
        (ARM_I8MM, "Arm with dot product"),
        (ARM_PLAIN, "falls back"),
    ],
)
def test_int4_rules_per_isa(isa, why):
    choice = resolve_int4(isa)
    assert choice.values == {"accuracy_level": 4}  # 0/1 measured slower; 4 falls back where MLAS lacks int8
    assert why in choice.why


def test_hqq_auto_keeps_level_0_and_explicit_levels_are_not_recorded():
    target = TargetIsa(AVX512_VNNI, "test")
    hqq = Int4WeightOnlyConfig(algorithm="hqq", symmetric=False, accuracy_level="auto")
    level, record = accuracy_level_for(hqq, target)
    assert level == 0 and "hqq" in record["why"]
    assert accuracy_level_for(Int4WeightOnlyConfig(accuracy_level=1), target) == (1, None)
    assert accuracy_level_for(Int4WeightOnlyConfig(), target) == (4, None)


def test_target_isa_reads_the_recipe_target_then_the_device_then_the_host():
    assert target_isa(RecipeTarget(isa=["avx2"])) == TargetIsa(AVX2, "recipe target.isa")
    pixel = target_isa(RecipeTarget(device="pixel8"))
    assert pixel.source == "device pixel8" and {"dotprod", "i8mm"} <= pixel.isa
    assert target_isa(None).source == target_isa(RecipeTarget()).source == "host"
    with pytest.raises(ValueError, match="not both"):
        RecipeTarget(isa=["avx2"], device="pixel8")


def test_an_unknown_target_device_is_refused_at_validate():
    recipe = Recipe.model_validate(
        {"name": "q", "target": {"device": "no-such-phone"}, "steps": [{"op": "quantize.int8_dynamic"}]}
    )
    with pytest.raises(UserError, match="target.device"):
        compile_chain(recipe, "q.yaml")


def _store(path: Path) -> ScratchStore:
    path.mkdir()
    return ScratchStore(path)


def _auto_chain(steps: list[dict], target: dict) -> Chain:
    """The recipe validated and compiled, less the export step it inserts (the test starts from ONNX)."""
    chain = compile_chain(Recipe.model_validate({"name": "auto", "target": target, "steps": steps}), "auto.yaml")
    return replace(chain, steps=tuple(s for s in chain.steps if not s.inserted))


def test_an_auto_recipe_runs_and_records_what_it_chose_and_why(tiny_onnx, tmp_path):
    auto = {"weight_type": "auto", "per_channel": "auto", "reduce_range": "auto"}
    chain = _auto_chain([{"op": "quantize.int8_dynamic", **auto}], {"isa": ["avx2"]})
    start = ChainStart(str(Path(tiny_onnx).resolve()), file_sha256(tiny_onnx))
    run = run_chain(OnnxFileBackend(), chain, start, _store(tmp_path / "s"), Reporter(quiet=True), "tiny")
    choice = run.steps[-1]["metrics"]["isa_choice"]
    assert choice["reduce_range"] is True and choice["weight_type"] == "qint8" and choice["per_channel"] is False
    assert choice["isa"] == ["avx2"] and choice["isa_source"] == "recipe target.isa" and "saturate" in choice["why"]
    # 7-bit weights were written: every int8 weight within [-64, 63]
    assert _max_abs_int8_weight(Path(run.artifact)) <= 64
    # the same recipe for a VNNI CPU writes today's artifact (full 8-bit range)
    vnni = _auto_chain([{"op": "quantize.int8_dynamic", **auto}], {"isa": ["avx512f", "avx512_vnni"]})
    work = tmp_path / "today"
    work.mkdir()
    today = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(work, log=lambda m: None))
    run = run_chain(OnnxFileBackend(), vnni, start, _store(tmp_path / "v"), Reporter(quiet=True), "tiny")
    assert run.steps[-1]["metrics"]["isa_choice"]["reduce_range"] is False
    assert _max_abs_int8_weight(Path(run.artifact)) > 64
    assert file_sha256(run.artifact) == file_sha256(today)


def test_int4_auto_from_a_device_target_writes_level_4(tiny_onnx, tmp_path):
    steps = [{"op": "quantize.int4_weight_only", "accuracy_level": "auto"}]
    chain = _auto_chain(steps, {"device": "rpi5-8gb"})
    start = ChainStart(str(Path(tiny_onnx).resolve()), file_sha256(tiny_onnx))
    run = run_chain(OnnxFileBackend(), chain, start, _store(tmp_path / "s"), Reporter(quiet=True), "tiny")
    metrics = run.steps[-1]["metrics"]
    assert metrics["accuracy_level"] == 4 and metrics["isa_choice"]["isa_source"] == "device rpi5-8gb"
    assert "dotprod" in metrics["isa_choice"]["isa"] and "Arm with dot product" in metrics["isa_choice"]["why"]
    assert {n["accuracy_level"] for n in matmul_nbits_nodes(Path(run.artifact))} == {4}


def test_an_explicit_config_records_no_choice(tiny_onnx, tmp_path):
    ctx = StepContext(tmp_path, log=lambda m: None, target=RecipeTarget(isa=["avx2"]))
    int8_dynamic(tiny_onnx, Int8DynamicConfig(**TODAY_INT8), ctx)
    assert "isa_choice" not in ctx.metrics


def _max_abs_int8_weight(path: Path) -> int:
    import numpy as np
    from onnx import TensorProto, numpy_helper

    model = load(path)
    ints = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8 and t.dims]
    return max(int(np.abs(a.astype(np.int32)).max()) for a in ints)


def test_the_cache_key_of_an_auto_step_names_the_target_isa_and_explicit_keys_are_unchanged():
    auto = Int8DynamicConfig(reduce_range="auto")
    avx2, vnni = RecipeTarget(isa=["avx2"]), RecipeTarget(isa=["avx2", "avx512_vnni"])
    assert resolution_key(auto, avx2) != resolution_key(auto, vnni)
    assert resolution_key(auto, avx2) == resolution_key(auto, RecipeTarget(isa=["avx2"]))
    assert resolution_key(Int8DynamicConfig(), avx2) == resolution_key(Int4WeightOnlyConfig(), vnni) == ""


def test_the_feasibility_warning_explains_auto_reduce_range_on_a_cpu_without_vnni():
    from edgescale.compress.feasibility import CPU_EP, ModelSize, Target, check

    chain = _auto_chain([{"op": "quantize.int8_dynamic", "reduce_range": "auto"}], {})
    avx2 = Target("laptop", AVX2, (CPU_EP,), 1e12, "test")
    [finding] = [f for f in check(chain, ModelSize(10**6, 10**6, 1024, 128), avx2) if f.check == "int8_kernels"]
    assert "reduce_range: auto is on for this device only if" in finding.reason
    assert "reduce_range: true" not in finding.reason
