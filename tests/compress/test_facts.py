"""Facts on the registration: a technique defined here (config, function, facts, recipe) is
picked up by the recipe rules, the device check and a study with no edit anywhere else.

The technique is 8-bit weight-only quantization into onnxruntime's ``MatMulNBits``
(``bits=8``): a real op that runs on the CPU provider, a weight quantizer with its own
byte estimate (1 B per weight + a float32 scale per block), and a contrib op NNAPI lacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from edgescale.bench.devices import get_device
from edgescale.compress.feasibility import CPU_EP, ModelSize, Target, artifact_bytes, check, device_target
from edgescale.compress.onnx_graph import op_counts, quiet_onnxruntime
from edgescale.compress.recipe import compile_chain
from edgescale.compress.registry import (
    DEFAULT_BACKEND,
    REGISTRY,
    StepConfig,
    StepContext,
    StepFacts,
    backend_label,
    implement,
    register,
    registry,
)
from edgescale.config import Recipe
from edgescale.errors import UserError

OP = "quantize.test_int8_weight_only"
SMALL = ModelSize(params_total=484_416, params_non_embedding=447_552, kv_bytes_per_token_fp32=3072, context=128)
SEVEN_B = ModelSize(7_000_000_000, 6_500_000_000, 2 * 4 * 4096 * 32, 4096)


class Int8WeightOnlyConfig(StepConfig):
    block_size: int = Field(32, ge=16, le=256, description="input rows sharing one float32 scale")


def int8_weight_only(path: Path, cfg: Int8WeightOnlyConfig, ctx: StepContext) -> Path:
    """8-bit symmetric weight-only quantization of every weight MatMul into MatMulNBits (test technique)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    out = ctx.work_dir / "model.int8_weight_only.onnx"
    with quiet_onnxruntime():
        algo = mnb.DefaultWeightOnlyQuantConfig(block_size=cfg.block_size, is_symmetric=True, bits=8)
        quantizer = mnb.MatMulNBitsQuantizer(
            str(path), bits=8, block_size=cfg.block_size, is_symmetric=True, algo_config=algo
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(out))
    ctx.metrics["op_counts"] = op_counts(out)
    return out


FACTS = StepFacts(
    writes=frozenset({"com.microsoft:MatMulNBits"}),
    weight_bytes=lambda cfg: 1 + 4 / cfg.block_size,  # int8 weights + a float32 scale per block
)


@pytest.fixture
def technique():
    """The technique registered for one test; the finalizer restores the registry as it was."""
    saved = dict(registry())
    register(OP, Int8WeightOnlyConfig, takes="onnx", gives="onnx", facts=FACTS)(int8_weight_only)
    yield registry()[OP]
    REGISTRY.clear()
    REGISTRY.update(saved)


def _chain(*steps, ep=CPU_EP, name="r"):
    steps = [s if isinstance(s, dict) else {"op": s} for s in steps]
    return compile_chain(Recipe(name=name, target={"execution_provider": ep}, steps=steps), "r.yaml")


def test_the_registration_is_undone_after_each_test(technique):
    assert OP in registry()


def test_no_registration_leaked_from_the_test_before():
    assert OP not in registry()


def test_rules_refuse_a_second_weight_quantizer_after_the_new_one(technique):
    with pytest.raises(UserError, match=r"quantize.int8_dynamic \(steps.1\) comes after " + OP) as e:
        _chain(OP, "quantize.int8_dynamic")
    assert e.value.field == "steps.1.op"
    with pytest.raises(UserError, match=OP + r" \(steps.1\) comes after quantize.int4_weight_only"):
        _chain("quantize.int4_weight_only", OP)
    assert [s.op for s in _chain(OP, "quantize.fp16").steps] == ["export.onnx", OP, "quantize.fp16"]


def test_the_fp16_refusal_offers_every_weight_quantizer_that_combines(technique):
    with pytest.raises(UserError) as e:
        _chain("quantize.fp16", "quantize.int8_dynamic")
    assert f"(quantize.int4_weight_only, {OP} do combine with quantize.fp16)" in e.value.detail


def test_the_fp16_refusal_reads_as_before_for_the_builtin_steps():
    with pytest.raises(UserError) as e:
        _chain("quantize.int8_static", "quantize.fp16")
    assert e.value.detail == (
        "quantize.fp16 (steps.1) cannot follow quantize.int8_static (steps.0): onnxruntime's int8 "
        "(Dynamic)QuantizeLinear takes float32 only, and the combined graph does not load; "
        "use one of them (quantize.int4_weight_only does combine with quantize.fp16)"
    )


def test_a_declared_op_the_provider_lacks_gives_the_op_support_finding(technique):
    chain = _chain(OP, ep="NnapiExecutionProvider")
    [finding] = [f for f in check(chain, SMALL, device_target(get_device("pixel8"))) if f.check == "op_support"]
    assert (finding.level, finding.step) == ("warn", OP) and "MatMulNBits" in finding.reason
    npu_only = Target("npu", frozenset({"neon"}), ("NnapiExecutionProvider",), 1e12, "test")
    assert [f.level for f in check(chain, SMALL, npu_only) if f.check == "op_support"] == ["refuse"]
    assert not [f for f in check(_chain(OP), SMALL, device_target(get_device("pixel8"))) if f.check == "op_support"]


def test_its_byte_estimate_feeds_the_memory_check(technique):
    other = SEVEN_B.params_total - SEVEN_B.params_non_embedding
    for block in (32, 128):
        chain = _chain({"op": OP, "block_size": block})
        assert artifact_bytes(chain, SEVEN_B) == SEVEN_B.params_non_embedding * (1 + 4 / block) + other * 4

    def board(gb):
        return Target(f"{gb}gb", frozenset({"neon", "dotprod"}), (CPU_EP,), gb * 1e9, "test")

    chain = _chain(OP)  # 7.31 GB of int8 weights + 2.0 GB of float32 embeddings + 4.29 GB of KV cache
    assert ("memory", "refuse") in {(f.check, f.level) for f in check(chain, SEVEN_B, board(13))}
    assert not [f for f in check(chain, SEVEN_B, board(14)) if f.check == "memory"]
    assert [f for f in check(_chain("quantize.int8_dynamic"), SEVEN_B, board(13)) if f.check == "memory"] == []


def test_optimum_preset_is_an_int8_quantizer_to_the_device_check_too():
    """It was a weight quantizer to the rules only; its declaration now tells the device check as well."""
    preset, dynamic = _chain("quantize.optimum_preset"), _chain("quantize.int8_dynamic")
    assert artifact_bytes(preset, SMALL) == artifact_bytes(dynamic, SMALL)
    rpi4 = device_target(get_device("rpi4-4gb"))
    assert [f.check for f in check(preset, SMALL, rpi4)] == [f.check for f in check(dynamic, SMALL, rpi4)]
    assert "int8_kernels" in {f.check for f in check(preset, SMALL, rpi4)}


def test_facts_depending_on_the_config_are_evaluated_per_step():
    qdq = _chain({"op": "quantize.int8_static", "format": "qdq"}).steps[-1]
    assert qdq.facts.writes == {"QuantizeLinear", "DequantizeLinear"} and qdq.facts.calibrates
    int4 = registry()["quantize.int4_weight_only"]
    gptq = int4.config.model_construct(algorithm="gptq")  # refused by validation while onnxruntime's GPTQ is broken
    assert int4.facts.of(gptq).calibrates and not _chain("quantize.int4_weight_only").steps[-1].facts.calibrates
    assert _chain({"op": "prune.nm", "n": 2, "m": 4}).steps[0].facts.sparsity == "2:4"
    assert registry()["prune.heads"].facts.changes_shape and not registry()["prune.nm"].facts.changes_shape


# ------------------------------------------------------------------ implementations per backend


def test_a_backend_implementation_is_found_and_a_missing_one_is_named(technique):
    torch_op = "prune.heads"
    default = registry()[torch_op].fn

    @implement(torch_op, backend="toy")
    def heads_toy(model, cfg, ctx):
        return model

    sd = registry()[torch_op]
    assert sd.implementation() is default and sd.implementation(DEFAULT_BACKEND) is default
    assert sd.implementation("toy") is heads_toy and sd.backends()[0] == DEFAULT_BACKEND and "toy" in sd.backends()
    with pytest.raises(UserError) as e:
        registry()["prune.layers"].implementation("toy")
    assert e.value.field == "op"
    assert e.value.detail == (
        "prune.layers is not available for 'toy' models (only for edgescale's GPT models); "
        "torch-stage steps for 'toy' models: prune.heads (and every ONNX-stage step)"
    )
    assert backend_label("hf") == "Hugging Face models"
    assert registry()[OP].implementation("toy") is int8_weight_only  # ONNX-stage: one function for every backend


def test_implement_refuses_what_it_cannot_mean(technique):
    with pytest.raises(RuntimeError, match="before the step is registered"):
        implement("prune.nothing", backend="hf")(lambda m, c, x: m)
    with pytest.raises(RuntimeError, match="ONNX-stage step"):
        implement(OP, backend="hf")(lambda m, c, x: m)
    with pytest.raises(RuntimeError, match="implemented twice"):
        implement("prune.ffn", backend=DEFAULT_BACKEND)(lambda m, c, x: m)


def test_the_ops_listing_shows_each_steps_facts():
    from edgescale.compress.catalog import op_catalog

    ops = op_catalog()
    assert ops["quantize.int4_weight_only"]["facts"] == {
        "writes": ["com.microsoft:MatMulNBits"],
        "weight_bytes": 0.625,
    }
    assert ops["quantize.fp16"]["facts"] == {"float_type": "float16"}
    assert ops["export.onnx"]["facts"] == {}


# ------------------------------------------------------------------ a study runs it end to end


@pytest.mark.slow
def test_a_new_technique_and_its_recipe_run_through_a_study(technique, tmp_path):
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    recipe = {
        "name": "int8_weight_only",
        "target": {"runtime": "onnxruntime", "execution_provider": "NnapiExecutionProvider"},
        "steps": [{"op": OP, "block_size": 16}],
    }
    (tmp_path / "int8_weight_only.yaml").write_text(yaml.safe_dump(recipe))
    study = {
        "name": "new-technique",
        "seed": 0,
        "ladder": {"block_size": 32, "sizes": [{"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 16}]},
        "training": {"min_tokens": 10_240, "max_tokens": 10_240, "batch_size": 16, "eval_tokens": 1024},
        "evaluation": {"context_length": 32, "stride": 32, "max_tokens": 1024, "batch_size": 8},
        "measurement": {"prompt_len": 16, "decode_context": 32, "repeats": 3, "warmup": 1, "threads": 1},
        "recipes": ["int8_weight_only.yaml"],
        "devices": ["host", "pixel8"],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = run_study(path, tmp_path / "run", Reporter(quiet=True))

    [variant] = json.loads((out / "results.json").read_text())["variants"]
    assert variant["recipe"] == "int8_weight_only"
    [step] = [s for s in variant["steps"] if s["op"] == OP]
    assert step["metrics"]["op_counts"]["com.microsoft:MatMulNBits"] >= 1
    findings = {(f["device"], f["check"], f["step"]) for f in variant["feasibility"]}
    assert ("pixel8", "op_support", OP) in findings  # NNAPI has no MatMulNBits: it falls back to the CPU


# ------------------------------------------------------------------ importing changes no process state


def test_importing_compress_leaves_the_environment_unchanged():
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import edgescale.compress\n"
        "from edgescale.compress.registry import registry\n"
        "registry()\n"
        "changed = sorted(k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k))\n"
        "sys.exit(f'changed: {changed}' if changed else 0)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
