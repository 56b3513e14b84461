"""The feasibility check warns about slow kernels and missing ops, and refuses what a device cannot hold."""

import pytest

from edgescale.bench.devices import get_device
from edgescale.compress.feasibility import (
    CPU_EP,
    ModelSize,
    Target,
    artifact_bytes,
    check,
    check_study,
    device_target,
    host_target,
)
from edgescale.compress.recipe import compile_chain
from edgescale.config import Recipe
from edgescale.errors import UserError

SMALL = ModelSize(params_total=484_416, params_non_embedding=447_552, kv_bytes_per_token_fp32=3072, context=128)


def _chain(*steps, ep=CPU_EP, name="r"):
    recipe = Recipe(
        name=name,
        target={"execution_provider": ep},
        steps=[s if isinstance(s, dict) else {"op": s} for s in steps],
    )
    return compile_chain(recipe, "r.yaml")


def _checks(chain, device, size=SMALL):
    target = device if isinstance(device, Target) else device_target(get_device(device))
    return {(f.check, f.level) for f in check(chain, size, target)}


def test_host_is_read_from_cpuinfo_and_meminfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    host = host_target(cpuinfo, meminfo)
    assert host.isa == {"avx2", "avx512f", "avx512_vnni"} and host.x86
    assert host.usable_bytes == 8_000_000 * 1024 and CPU_EP in host.execution_providers
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp asimddp i8mm\n")
    assert host_target(arm, meminfo).isa == {"neon", "fp16", "dotprod", "i8mm"}


def test_int8_warns_without_dot_product_instructions():
    chain = _chain("quantize.int8_dynamic")
    assert ("int8_kernels", "warn") in _checks(chain, "rpi4-4gb")  # Cortex-A72: NEON only
    assert ("int8_kernels", "warn") not in _checks(chain, "galaxy-s24")  # dotprod + i8mm
    avx2 = Target("x", frozenset({"avx2"}), (CPU_EP,), 1e12, "test")
    [finding] = [f for f in check(chain, SMALL, avx2) if f.check == "int8_kernels"]
    assert "VPMADDUBSW" in finding.reason and "reduce_range: true" in finding.reason
    reduced = _chain({"op": "quantize.int8_static", "reduce_range": True})
    [finding] = [f for f in check(reduced, SMALL, avx2) if f.check == "int8_kernels"]
    assert "reduce_range" not in finding.reason


def test_sparsity_warns_unless_tensorrt_runs_two_four():
    for op in ({"op": "prune.nm"}, {"op": "prune.magnitude"}):
        assert ("sparse_kernels", "warn") in _checks(_chain(op), "jetson-orin-nano")
    trt = _chain({"op": "prune.nm", "n": 2, "m": 4}, ep="TensorrtExecutionProvider")
    assert ("sparse_kernels", "warn") not in _checks(trt, "jetson-orin-nano")
    assert ("sparse_kernels", "warn") in _checks(trt, "rpi5-8gb")  # no TensorRT there


def test_int4_on_a_provider_without_matmulnbits_falls_back_or_is_refused():
    chain = _chain("quantize.int4_weight_only", ep="NnapiExecutionProvider")
    [finding] = [f for f in check(chain, SMALL, device_target(get_device("pixel8"))) if f.check == "op_support"]
    assert finding.level == "warn" and "MatMulNBits" in finding.reason and "fall back" in finding.reason
    npu_only = Target("npu", frozenset({"neon"}), ("NnapiExecutionProvider",), 1e12, "test")
    assert ("op_support", "refuse") in _checks(chain, npu_only)
    assert not {c for c, _ in _checks(_chain("quantize.int4_weight_only"), "pixel8")} & {"op_support"}


def test_qoperator_int8_on_qnn_warns_but_qdq_does_not():
    qop = _chain({"op": "quantize.int8_static"}, ep="QNNExecutionProvider")
    qdq = _chain({"op": "quantize.int8_static", "format": "qdq"}, ep="QNNExecutionProvider")
    reasons = [f.reason for f in check(qop, SMALL, device_target(get_device("galaxy-s24"))) if f.check == "op_support"]
    assert reasons and "QLinearMatMul" in reasons[0]
    assert ("op_support", "warn") not in _checks(qdq, "galaxy-s24")


def test_a_target_provider_the_device_lacks_is_named():
    chain = _chain("quantize.fp16", ep="CUDAExecutionProvider")
    [finding] = [
        f for f in check(chain, SMALL, device_target(get_device("rpi5-8gb"))) if f.check == "execution_provider"
    ]
    assert "CUDAExecutionProvider" in finding.reason and finding.level == "warn"
    assert ("execution_provider", "warn") not in _checks(chain, "jetson-orin-nano")


def test_storage_precision_orders_the_artifact_size():
    sizes = [artifact_bytes(_chain(*ops), SMALL) for ops in ([], ["quantize.fp16"], ["quantize.int8_dynamic"])]
    sizes.append(artifact_bytes(_chain("quantize.int4_weight_only"), SMALL))
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 4 * SMALL.params_total


def test_a_model_that_does_not_fit_is_refused_naming_recipe_size_and_device():
    seven_b = ModelSize(7_000_000_000, 6_500_000_000, 2 * 4 * 4096 * 32, 4096)
    with pytest.raises(UserError, match=r"recipe fp32 on size 7b is infeasible: .*rpi4-4gb: model 28\.00 GB") as e:
        check_study([_chain(name="fp32")], {"7b": seven_b}, ["rpi4-4gb"], "study.yaml")
    assert e.value.file == "study.yaml" and e.value.field == "recipes"

    def board(gb):
        return Target(f"{gb}gb", frozenset({"neon", "dotprod"}), (CPU_EP,), gb * 1e9, "test")

    int4 = _chain("quantize.int4_weight_only")  # 6.06 GB of weights + 4.29 GB of float32 KV cache
    assert ("memory", "refuse") in _checks(int4, board(8), seven_b)
    assert ("memory", "refuse") not in _checks(int4, board(12), seven_b)
    assert ("memory", "refuse") in _checks(_chain(), board(12), seven_b)  # fp32 needs 32 GB


def test_study_findings_cover_every_size_and_recipe():
    chains = [_chain(name="fp32"), _chain("quantize.int8_dynamic", name="int8")]
    out = check_study(chains, {"s0": SMALL, "s1": SMALL}, ["host", "rpi4-4gb", "galaxy-s24"])
    assert set(out) == {(s, r) for s in ("s0", "s1") for r in ("fp32", "int8")}
    assert all(f.device in {"host", "rpi4-4gb", "galaxy-s24"} for fs in out.values() for f in fs)
    assert any(f.check == "int8_kernels" and f.device == "rpi4-4gb" for f in out[("s0", "int8")])
    assert not any(f.check == "int8_kernels" for f in out[("s0", "fp32")])


def test_a_study_that_cannot_fit_stops_before_the_run_directory_exists(tmp_path):
    """The pipeline checks every (size, recipe, device) in load_inputs, before training."""
    import subprocess
    import sys

    import yaml

    study = {
        "name": "too-big",
        "ladder": {"block_size": 128, "sizes": [{"name": "big", "n_layer": 24, "n_head": 16, "n_embd": 2048}]},
        "recipes": ["fp32", "int4_weight_only"],
        "devices": ["rpi4-4gb"],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "edgescale.cli", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "recipe fp32 on size big is infeasible" in r.stderr and "rpi4-4gb: model" in r.stderr
    assert not out.exists()


def test_pipeline_keeps_findings_on_the_variant_and_prints_each_once(tmp_path):
    from io import StringIO

    import yaml
    from rich.console import Console

    from edgescale.pipeline import Pipeline
    from edgescale.progress import Reporter
    from edgescale.study_inputs import load_inputs

    study = {
        "name": "feasible",
        "ladder": {"block_size": 32, "sizes": [{"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 16}]},
        "evaluation": {"context_length": 32, "stride": 32},
        "measurement": {"prompt_len": 16, "decode_context": 32},
        "recipes": ["fp32", "int8_dynamic"],
        "devices": ["rpi4-4gb"],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    inputs = load_inputs(path)
    out = StringIO()
    pipe = Pipeline(inputs, rd=None, rep=Reporter(console=Console(file=out, width=400)))
    plan, (fp32, int8) = inputs.plans[0], inputs.chains
    assert not [f for f in pipe.feasibility(plan, fp32) if f["check"] == "int8_kernels"]
    findings = pipe.feasibility(plan, int8)
    assert any((f["device"], f["check"], f["level"]) == ("rpi4-4gb", "int8_kernels", "warn") for f in findings)
    pipe.feasibility(plan, int8)  # a second size with the same warnings prints nothing new
    assert out.getvalue().count("rpi4-4gb: quantize.int8_dynamic") == 1
