"""results.json: the default (tiny) study's file validates and round-trips; older versions are
migrated, unknown ones refused; a typo'd key fails."""

from __future__ import annotations

import copy
import json

import pytest

from edgescale.errors import UserError
from edgescale.results import SCHEMA_VERSION, Results, parse_results, read_results, write_results
from edgescale.results.analysis_schema import Analysis

VARIANT = {
    "variant_id": "a/fp32",
    "size": "a",
    "recipe": "fp32",
    "onnx_path": "artifacts/a.onnx",
    "onnx_sha256": "0" * 64,
    "file_bytes": 1000,
    "shape": {"n_layer": 1, "n_head": 2, "n_embd": 16, "model": "gpt"},
    "params_non_embedding": 100,
    "params_total": 200,
    "train_tokens": 1000,
    "steps": [{"op": "export.onnx", "metrics": {}}],
    "feasibility": [],
    "scratch_twin": None,
    "loss": {"validation": {"bits_per_byte": 5.0, "nats_per_token": 3.4, "tokens": 64}},
    "cost": {
        "weight_bytes": 800,
        "kv_bytes_per_token": 128,
        "decode_context": 32,
        "kv_bytes_at_context": 4096,
        "bytes_per_decoded_token": 4896,
        "flops_per_token": 400.0,
        "kv_precision": "fp32",
        "peak_memory_bytes": 9000,
        "peak_memory_source": "estimate",
    },
    "latency": {"host": {"kind": "measured", "latency_source": "measured", "decode_ms_p50": 0.1}},
    "flags": [],
}
RESULTS = {
    "study": "small",
    "schema_version": SCHEMA_VERSION,
    "loss_target_bpb": 6.0,
    "protocol": {
        "context_length": 32,
        "stride": 32,
        "max_tokens": 64,
        "split_sha256": "v" * 64,
        "unit": "bits_per_byte",
    },
    "measurement": {"prompt_len": 16, "decode_context": 32},
    "sizes": [{"size": "a", "params_total": 200, "train_tokens": 1000}],
    "variants": [VARIANT],
    "scaling": {
        "status": "fitted",
        "law": {"E": 1.0, "A": 50.0, "B": 80.0, "alpha": 0.3, "beta": 0.3},
        "plan_for_target": {"status": "ok", "shape": {"n_layer": 2, "n_embd": 64, "n_head": 4}, "loss_target_bpb": 6.0},
    },
    "analysis": {"schema_version": 2, "loss_target_bpb": 6.0},
}


def as_version_1(data: dict, *, with_version: bool = True) -> dict:
    """``data`` as edgescale wrote it before schema version 2 (the old names)."""
    old = copy.deepcopy(data)
    old.pop("schema_version")
    if with_version:
        old["schema_version"] = 1
    analysis = old["analysis"]
    analysis["target_bpb"] = analysis.pop("loss_target_bpb")
    for answer in [*(analysis.get("picks") or {}).values(), analysis.get("routes")]:
        if answer:
            answer["target_bpb"] = answer.pop("loss_target_bpb")
    plan = old["scaling"].get("plan_for_target")
    if plan:
        plan["target_bpb"] = plan.pop("loss_target_bpb")
        if "shape" in plan:
            plan["shape"]["d_model"] = plan["shape"].pop("n_embd")
    for v in old["variants"]:
        v["cost"]["flops_context"] = v["cost"]["decode_context"]
    return old


def _write(run_dir, data: dict):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    return run_dir


def test_minimal_results_round_trip(tmp_path):
    results = parse_results(RESULTS)
    assert isinstance(results, Results)
    assert results.variants[0].cost.decode_context == 32
    assert results.scaling.plan_for_target.loss_target_bpb == 6.0
    text = (_write(tmp_path / "run", RESULTS) / "results.json").read_bytes()
    write_results(tmp_path / "again.json", read_results(tmp_path / "run"))
    assert (tmp_path / "again.json").read_bytes() == text


@pytest.mark.parametrize("where", [("variants", 0, "cost"), ("variants", 0, "loss", "validation"), ("protocol",), ()])
def test_a_typo_d_key_fails(where):
    bad = copy.deepcopy(RESULTS)
    d = bad
    for k in where:
        d = d[k]
    d["bits_per_bite"] = 1.0
    with pytest.raises(UserError, match="Extra inputs are not permitted"):
        parse_results(bad)


def test_a_missing_section_fails():
    bad = {k: v for k, v in RESULTS.items() if k != "variants"}
    with pytest.raises(UserError, match="not a valid edgescale results.json") as e:
        parse_results(bad)
    assert e.value.field == "variants"


@pytest.mark.parametrize("with_version", [True, False])
def test_version_1_is_migrated(tmp_path, with_version):
    old = as_version_1(RESULTS, with_version=with_version)
    assert read_results(_write(tmp_path / "run", old)).data() == RESULTS


def test_version_1_with_a_flops_context_of_its_own_is_refused():
    old = as_version_1(RESULTS)
    old["variants"][0]["cost"]["flops_context"] = 64
    with pytest.raises(UserError, match="flops_context 64 differs from decode_context 32"):
        parse_results(old)


def test_an_unknown_version_is_refused_by_report_and_pick(tmp_path):
    from edgescale.report.build import report_run
    from edgescale.report.pick import load_run_dir

    run = _write(tmp_path / "run", {**RESULTS, "schema_version": 7})
    for read in (read_results, report_run, load_run_dir):
        with pytest.raises(UserError, match="schema_version 7 is not one this edgescale reads"):
            read(run)


def test_the_tiny_study_results_validate_and_round_trip(tiny_run, tmp_path):
    _, run, _ = tiny_run
    text = (run / "results.json").read_bytes()
    results = read_results(run)
    assert results.schema_version == SCHEMA_VERSION
    assert results.variants and isinstance(results.analysis, Analysis)
    assert results.analysis.loss_target_bpb == results.loss_target_bpb
    assert set(results.analysis.picks) == {"host", "rpi5-8gb"} and results.analysis.compare.sizes
    write_results(tmp_path / "results.json", results)
    assert (tmp_path / "results.json").read_bytes() == text


def test_the_tiny_study_results_of_version_1_are_migrated(tiny_run, tmp_path):
    _, run, _ = tiny_run
    data = json.loads((run / "results.json").read_text())
    migrated = read_results(_write(tmp_path / "old", as_version_1(data)))
    assert migrated.data() == data


# where a typo'd key goes inside the analysis section: every part of it is typed, none a free dict
ANALYSIS_PARTS = [
    ("analysis",),
    ("analysis", "frontiers", "bytes_per_decoded_token"),
    ("analysis", "frontiers", "bytes_per_decoded_token", "front", 0),
    ("analysis", "degradation", "int8_dynamic"),
    ("analysis", "degradation", "int8_dynamic", "points", 0),  # two sizes: no law, so no curve
    ("analysis", "picks", "rpi5-8gb"),
    ("analysis", "picks", "rpi5-8gb", "variant", "loss"),
    ("analysis", "compare", "sizes", 0, "rows", 0),
    ("analysis", "compare", "sizes", 0, "rows", 0, "device_latency"),
    ("analysis", "routes", "per_device", "host"),
    ("analysis", "routes", "points", 0, "training_flops"),
]


def test_the_tiny_study_analysis_is_typed_to_its_leaves(tiny_run):
    _, run, _ = tiny_run
    data = json.loads((run / "results.json").read_text())
    for where in ANALYSIS_PARTS:
        bad = copy.deepcopy(data)
        d = bad
        for k in where:
            d = d[k]
        d["loss_target_bpbb"] = 6.0
        with pytest.raises(UserError, match="Extra inputs are not permitted") as e:
            parse_results(bad)
        assert e.value.field.startswith("analysis.") and e.value.field.endswith(".loss_target_bpbb"), where


def test_a_typo_d_key_in_a_minimal_analysis_fails():
    bad = copy.deepcopy(RESULTS)
    bad["analysis"]["served_tokenz"] = 1e9
    with pytest.raises(UserError, match="Extra inputs are not permitted") as e:
        parse_results(bad)
    assert e.value.field == "analysis.served_tokenz"
