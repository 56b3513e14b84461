"""A tiny study end to end on real artifacts, and a rerun that reuses them."""

import json
from io import StringIO

import onnxruntime as ort
import pytest
import yaml
from rich.console import Console
from tiny_study import TINY

from edgescale.bench.loss import onnx_loss
from edgescale.config import CorpusConfig
from edgescale.data.corpus import eval_spans, load_corpus
from edgescale.progress import Reporter
from edgescale.run import run_study


@pytest.mark.slow
def test_run_directory_holds_every_variant_with_real_artifacts(tiny_run):
    _, out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["packages"]["onnxruntime"] and manifest["machine"]["cpu_model"]
    ids = {v["variant_id"] for v in results["variants"]}
    assert ids == {"a/fp32", "a/int8_dynamic", "b/fp32", "b/int8_dynamic", "a-kd/fp32", "a-kd/int8_dynamic"}
    pair = results["distillation"]["pairs"][0]
    assert (pair["student"], pair["scratch"], pair["teacher"]) == ("a-kd", "a", "b")
    assert pair["val_bpb_distilled"] > 0 and pair["val_bpb_scratch"] > 0
    for v in results["variants"]:
        path = out / v["onnx_path"]
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert path.name.startswith(v["onnx_sha256"][:20])
        host = v["latency"]["host"]
        assert host["kind"] == "measured" and 0 < host["decode_ms_p50"] <= host["decode_ms_p90"]
        pi5 = v["latency"]["rpi5-8gb"]
        assert pi5["latency_source"] == "predicted" and host["latency_source"] == "measured"
        assert pi5["decode_ms"] > 0 and "efficiency.bw" in pi5["assumed"]
    for f in ("frontier.png", "report.html"):
        assert (out / f).stat().st_size > 1000
    assert any(v["on_frontier"] for v in results["variants"])
    sc = results["scaling"]
    assert sc["status"] == "fitted" and len(sc["points"]) == 6  # 2 sizes x 3 cooled checkpoints
    assert set(sc["law"]["ci"]) >= {"E", "alpha", "beta", "a"}
    assert (out / "scaling.png").stat().st_size > 1000
    falls = results["loss_falls_with_size"]
    assert falls["equal_tokens"] > 0 and falls["at_own_budget"] in (True, False)
    assert all(len(s["curve"]) >= 2 for s in results["sizes"])


@pytest.mark.slow
def test_reported_loss_is_reproduced_by_an_independent_onnx_evaluation(tiny_run):
    study, out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    p = results["protocol"]
    corpus = load_corpus(CorpusConfig())
    assert corpus["validation"].sha256 == p["split_sha256"]
    sampling = p["sampling"]  # the protocol says which text was scored: enough to score it again
    spans = eval_spans(corpus["validation"], p["max_bytes"], sampling["segments"], sampling["scheme"])
    for v in results["variants"]:
        got = onnx_loss(
            out / v["onnx_path"],
            corpus["validation"],
            p["context_length"],
            p["stride"],
            p["max_bytes"],
            p["batch_size"],
            spans,
        )
        assert got.bits_per_byte == pytest.approx(v["loss"]["validation"]["bits_per_byte"], rel=1e-3)


@pytest.mark.slow
def test_rerun_reuses_finished_artifacts(tiny_run):
    study, out, _ = tiny_run
    files = [*(out / "artifacts").iterdir(), out / "report.html", out / "summary.md", *out.glob("*.png")]
    before = {p: p.stat().st_mtime_ns for p in files}
    buf = StringIO()
    run_study(study, out, Reporter(console=Console(file=buf, width=200)))
    log = buf.getvalue()
    assert "reused train a" in log and "reused train b" in log and "reused train a-kd" in log
    assert "reused host latency" in log and "reused report" in log  # same results: same report, not redrawn
    assert "done" not in log
    after = {p: p.stat().st_mtime_ns for p in files}
    assert after == before


@pytest.mark.slow
def test_corrupted_artifact_is_quarantined_and_rebuilt(tiny_run):
    study, out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    victim = out / next(v["onnx_path"] for v in results["variants"] if v["recipe"] == "int8_dynamic")
    victim.write_bytes(victim.read_bytes()[:1000])  # truncated
    (out / "frontier.png").unlink()  # a report file gone: the report is drawn again
    run_study(study, out, Reporter(quiet=True))
    assert (out / "quarantine" / victim.name).exists()
    assert (out / "frontier.png").stat().st_size > 1000
    again = json.loads((out / "results.json").read_text())
    # rebuilt bit-identically, under the same hash (the rebuilt step's wall time and peak RSS are its own)
    timeless = [[{k: x for k, x in v.items() if k != "resources"} for v in r["variants"]] for r in (again, results)]
    assert timeless[0] == timeless[1]
    assert again["variants"][1]["resources"]["quantize.int8_dynamic"]["wall_s"] > 0
    ort.InferenceSession(str(victim), providers=["CPUExecutionProvider"])


def test_second_run_on_a_locked_directory_is_refused(tmp_path):
    from edgescale.errors import UserError
    from edgescale.rundir import RunDir

    with RunDir(tmp_path / "r"), pytest.raises(UserError, match="another edgescale run"), RunDir(tmp_path / "r"):
        pass


@pytest.mark.slow
def test_fit_reads_a_run_directory(tiny_run):
    from edgescale.results.points import load_points
    from edgescale.scaling.fit import fit_chinchilla

    _, out, _ = tiny_run
    pts = load_points(out)
    assert pts.n.size == 6 and "cooled" in pts.notes[0]
    assert fit_chinchilla(pts.n, pts.d, pts.loss, n_boot=10).n_points == 6


def test_critical_batch_rule_is_clamped_and_recorded():
    from edgescale.config import Study
    from edgescale.study_inputs import critical_batch

    study = Study.model_validate(
        {**TINY, "training": {**TINY["training"], "batch_rule": "critical"}, "loss_target_bpb": 3.3}
    )
    # Kaplan's B_crit at 2.29 nats is ~4M tokens; D/100 = 409 tokens caps it: 409 / 32 -> 13 sequences.
    assert critical_batch(study, 40_960) == 13
    assert critical_batch(study, 320) == 1  # never below one sequence


PRUNED = {
    **{k: v for k, v in TINY.items() if k != "distillation"},
    "name": "pruned",
    "ladder": {"block_size": 32, "sizes": [{"name": "b", "n_layer": 2, "n_head": 2, "n_embd": 32}]},
    # every shipped recipe runs on the tiny model in tests/test_shipped_files.py; here the
    # ones that change the shape, one that quantizes it after, and one that keeps it dense
    "recipes": [
        "fp32",
        "int8_dynamic",
        "int4_weight_only",
        "heads_ffn50_recover",
        "heads_ffn50_recover_int8",
        "layer_drop_recover_int4",
        "sparse_2_4",
    ],  # fmt: skip
    "devices": ["host"],
}


@pytest.mark.slow
def test_pruned_variants_report_their_own_shape_and_a_scratch_twin(tmp_path):
    study = tmp_path / "pruned.yaml"
    study.write_text(yaml.safe_dump(PRUNED))
    out = tmp_path / "run"
    run_study(study, out, Reporter(quiet=True))
    v = {x["recipe"]: x for x in json.loads((out / "results.json").read_text())["variants"]}
    assert sorted(v) == sorted(PRUNED["recipes"])
    for recipe, x in v.items():
        assert (out / x["onnx_path"]).exists() and 0 < x["loss"]["test"]["bits_per_byte"] < 8, recipe
        assert x["latency"]["host"]["decode_ms_p50"] > 0, recipe
    # the pruned-then-quantized recipes reuse the pruned model: same shape, same twin
    assert v["heads_ffn50_recover_int8"]["shape"] == v["heads_ffn50_recover"]["shape"]
    t1, t2 = v["heads_ffn50_recover_int8"]["scratch_twin"], v["heads_ffn50_recover"]["scratch_twin"]
    assert t1["onnx_sha256"] == t2["onnx_sha256"] and t1["loss"] == t2["loss"]
    assert v["layer_drop_recover_int4"]["shape"]["n_layer"] < TINY["ladder"]["sizes"][1]["n_layer"]
    assert v["int4_weight_only"]["file_bytes"] < v["int8_dynamic"]["file_bytes"] < v["fp32"]["file_bytes"]
    base, pruned, sparse = v["fp32"], v["heads_ffn50_recover"], v["sparse_2_4"]
    # heads and FFN halved: the variant is accounted at its own (smaller) shape
    assert pruned["shape"]["layer_heads"] == [1, 1] and pruned["shape"]["layer_ffn"] == [64, 64]
    assert pruned["params_non_embedding"] < base["params_non_embedding"]
    assert pruned["cost"]["kv_bytes_per_token"] == base["cost"]["kv_bytes_per_token"] // 2
    recover = next(s for s in pruned["steps"] if s["op"] == "distill.recover")["metrics"]["tokens"]
    assert pruned["train_tokens"] == base["train_tokens"] + recover > base["train_tokens"]
    twin = pruned["scratch_twin"]
    assert twin["shape"]["layer_heads"] == [1, 1] and twin["train_tokens"] == pruned["train_tokens"]
    assert twin["loss"]["validation"]["bits_per_byte"] > 0 and (out / twin["onnx_path"]).exists()
    # 2:4 keeps the dense shape: no twin, but the flag that dense kernels gain nothing
    assert sparse["scratch_twin"] is None and sparse["params_total"] == base["params_total"]
    assert "no dense-kernel speedup on this runtime" in sparse["flags"]
    assert base["scratch_twin"] is None and "shape" in base and base["steps"][-1]["op"] == "export.onnx"
