"""Smoke test of ``benchmarks/graph_forms.py`` on the tiny study's finished run: it finds each size's
trained checkpoint (the old graph reproduces the loss the run recorded), both graph forms score the
same loss, the timed rows name both KV bindings and node counts. No speed-up is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "graph_forms.py"


def _script():
    spec = importlib.util.spec_from_file_location("graph_forms", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_graph_forms_on_the_tiny_run(tiny_run, tmp_path):
    _, run, _ = tiny_run
    out = tmp_path / "forms.json"
    assert _script().main(["--run", str(run), "--repeats", "3", "--json", str(out)]) == 0
    got = json.loads(out.read_text())

    assert [(r["size"], r["recipe"]) for r in got["loss"]] == [
        ("a", "fp32"),
        ("a", "int8_dynamic"),
        ("b", "fp32"),
        ("b", "int8_dynamic"),
    ]
    for r in got["loss"]:
        # the checkpoint found is the one the run's variants came from: its export scores what the run recorded
        assert min(abs(r["study_recorded_bpb"] - r[k]) for k in ("old_bpb", "new_bpb")) < 1e-6
        assert abs(r["delta_bpb"]) < (1e-5 if r["recipe"] == "fp32" else 1e-3)
        assert r["old_se_bpb"] > 0 and r["delta_se_bpb"] >= 0
    assert all("greedy tokens = torch" in v for v in got["torch_check"].values())

    assert len(got["latency"]) == 4
    for r in got["latency"]:
        assert (r["kv_buffer_traced"], r["kv_buffer_fused"]) == ("concat", "shared")
        assert r["nodes_fused"] < r["nodes_traced"]
        assert r["decode"]["low"] <= r["decode"]["speedup"] <= r["decode"]["high"]
    h = got["header"]
    assert h["onnxruntime"] and h["isa"] and h["load"] is not None and h["spec"]["prompt_len"] == 16

    assert got["recipes"]["size"] == "b"
    rows = {r["recipe"]: r for r in got["recipes"]["rows"]}
    assert rows["fp32"]["fused"]["delta_bpb"] == 0.0 and rows["int8_dynamic"]["graph_chosen"] == "fused"
    assert abs(rows["int8_dynamic"]["fused"]["delta_bpb"] - rows["int8_dynamic"]["traced"]["delta_bpb"]) < 1e-3
    assert "skipped" in rows["heads_ffn50_recover"]


def test_a_missing_run_is_one_line_naming_edgescale_run(tmp_path, capsys):
    assert _script().main(["--run", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "edgescale run" in err
