"""Where the time goes: onnxruntime's profile of a graph whose op mix is known, and the decode
step against the bandwidth limit on numbers chosen by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgescale.bench.measure import MeasureSpec, measure_variants
from edgescale.bench.profile import (
    Bandwidth,
    PhaseProfile,
    VariantProfile,
    decode_limit,
    host_profile_fields,
    probe_bandwidth,
    profile_variant,
)
from edgescale.results.schema import HostLatency

VOCAB, WIDTH = 64, 32
SPEC = MeasureSpec(prompt_len=8, decode_context=12, repeats=3, warmup=1, threads=1, processes=1)


@pytest.fixture(scope="module")
def known_lm(tmp_path_factory):
    """A causal LM without a KV cache, op mix chosen: Gather, MatMul, Relu, MatMul, Relu, MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [("emb", (VOCAB, WIDTH)), ("w1", (WIDTH, WIDTH)), ("w2", (WIDTH, WIDTH)), ("w3", (WIDTH, VOCAB))]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in weights]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h0"]),
        helper.make_node("MatMul", ["h0", "w1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "w2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w3"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "known",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "T"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "T", VOCAB])],
        inits,
    )
    path = tmp_path_factory.mktemp("known") / "known.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _check_known(phase: PhaseProfile) -> None:
    assert set(phase.kernel_us_by_op) == {"Gather", "MatMul", "Relu"}
    assert phase.nodes_run == 6 and phase.nodes_by_provider == {"CPUExecutionProvider": 6}
    assert sum(phase.shares().values()) == pytest.approx(1.0)
    assert all(s >= 0 for s in phase.shares().values()) and phase.run_us > 0
    shares = list(phase.shares().values())
    assert shares == sorted(shares, reverse=True)  # largest first, as the report lists them


def test_profile_of_a_known_graph_shows_its_op_types_nodes_and_provider(known_lm):
    prof = profile_variant(known_lm, SPEC.model_copy(update={"graph_optimization": "disable"}))
    _check_known(prof.prefill)
    _check_known(prof.decode)
    assert prof.graph_nodes == 6


def test_measurement_profiles_each_variant_once_after_timing(known_lm):
    spec = SPEC.model_copy(update={"graph_optimization": "disable", "processes": 2, "repeats": 6})
    rep = measure_variants({"a": known_lm, "b": known_lm}, spec, baseline="a")
    assert set(rep.profiles) == {"a", "b"}  # the A/A copy is timed, not reported
    assert rep.variants["a"].n_samples == 6  # profiling adds no timed samples
    _check_known(VariantProfile.from_dict(rep.profiles["b"]).decode)
    assert rep.bandwidth_probe["gbps"] > 0 and rep.bandwidth_probe["source"].startswith("probe")
    off = measure_variants({"a": known_lm}, spec.model_copy(update={"profile": False, "aa_control": False}))
    assert off.profiles == {} and off.bandwidth_probe is None


def test_profile_of_a_kv_cache_gpt(tiny_onnx):
    prof = profile_variant(tiny_onnx, SPEC)
    for phase in (prof.prefill, prof.decode):
        assert "MatMul" in phase.kernel_us_by_op or "FusedMatMul" in phase.kernel_us_by_op
        assert set(phase.nodes_by_provider) == {"CPUExecutionProvider"}
        assert phase.nodes_run == sum(phase.nodes_by_provider.values()) > 0
    assert prof.graph_nodes >= prof.decode.nodes_run


def test_decode_efficiency_arithmetic():
    # 24 MB of weights + 6 MB of KV at 30 GB/s: 1 ms; measured 2 ms over 4 layers
    lim = decode_limit(24e6, 6e6, Bandwidth(30.0, "hand"), decode_ms_p50=2.0, n_layer=4)
    assert lim.limit_ms == pytest.approx(1.0)
    assert lim.efficiency == pytest.approx(0.5)
    assert lim.non_weight_us_per_layer == pytest.approx(250.0)
    assert decode_limit(3e6, 0, Bandwidth(30.0, "hand"), 0.1, None).non_weight_us_per_layer is None
    assert probe_bandwidth(mbytes=16, tries=2).gbps > 0
    with pytest.raises(ValueError, match="positive"):
        decode_limit(1e6, 0, Bandwidth(0.0, "hand"), 1.0, 2)


def test_results_fields_from_a_measurement_record():
    phase = {
        "kernel_us_by_op": {"Concat": 20.0, "MatMulNBits": 60.0, "Add": 20.0},
        "nodes_by_provider": {"CPUExecutionProvider": 9},
        "nodes_run": 9,
        "run_us": 130.0,
    }
    latency = {
        "variants": {"s/int4": {"decode_ms_p50": 0.5}},
        "profiles": {"s/int4": {"prefill": phase, "decode": phase, "graph_nodes": 9}},
        "bandwidth_probe": {"gbps": 20.0, "source": "probe"},
    }
    fields = host_profile_fields(latency, "s/int4", 4e6, 1e6, n_layer=2)
    assert list(fields["profile"]["decode"]["share_by_op"].items())[0] == ("MatMulNBits", 0.6)
    assert fields["decode_limit"]["efficiency"] == pytest.approx(0.25 / 0.5)
    assert fields["decode_limit"]["non_weight_us_per_layer"] == pytest.approx(125.0)
    host = HostLatency.model_validate({"latency_source": "measured", "decode_ms_p50": 0.5, **fields})
    assert host.profile.graph_nodes == 9 and host.decode_limit.bandwidth_source == "probe"
    assert host_profile_fields({"variants": {}}, "s/int4", 4e6, 1e6, 2) == {}  # an older record
