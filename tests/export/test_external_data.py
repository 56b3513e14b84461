"""Graphs over 2 GB: ONNX external data stored, hashed, verified, quantized and scored.

A tiny model is forced through the path by saving it with external data (what optimum and
onnxruntime's quantizers write above 2 GB), so every test runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgescale.bench.loss import onnx_loss
from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.onnx_graph import has_external_data, initializer_bytes, load_graph, op_counts
from edgescale.compress.registry import StepContext
from edgescale.data.corpus import Split
from edgescale.errors import UserError
from edgescale.export.canonical import artifact_sha256, external_data_files, move_onnx
from edgescale.rundir import RunDir


def _external(src, dst, location: str = "weights.bin"):
    """``src`` saved as ``dst`` with every initializer in the one data file ``location``."""
    onnx.save(onnx.load(str(src)), str(dst), save_as_external_data=True, location=location, size_threshold=1024)
    return dst


def _locations(path) -> set[str]:
    return {e.value for t in load_graph(path).graph.initializer for e in t.external_data if e.key == "location"}


@pytest.fixture
def ext_onnx(tiny_onnx, tmp_path):
    (tmp_path / "step").mkdir()
    return _external(tiny_onnx, tmp_path / "step" / "model.onnx")


def test_a_graph_without_external_data_keeps_its_hash(tmp_path):
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], producer_name="t", ir_version=10)
    onnx.save(m, str(tmp_path / "small.onnx"))
    # the hash the single-file code gave this graph before external data existed
    old = "2042aed69992dff25611fccab5751ac6c30e14e436f31b4f4cd85604fb2ce549"
    assert artifact_sha256(tmp_path / "small.onnx") == old


def test_hash_covers_the_data_but_not_its_file_name(ext_onnx, tiny_onnx, tmp_path):
    renamed = _external(tiny_onnx, tmp_path / "other.onnx", location="elsewhere.data")
    assert artifact_sha256(ext_onnx) == artifact_sha256(renamed)
    assert artifact_sha256(ext_onnx) != artifact_sha256(tiny_onnx)  # inline and external are different files
    data = tmp_path / "elsewhere.data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert artifact_sha256(renamed) != artifact_sha256(ext_onnx)
    data.unlink()
    with pytest.raises(UserError, match="external data file elsewhere.data is missing"):
        artifact_sha256(renamed)


def test_store_moves_graph_and_data_under_the_hash(ext_onnx, tiny_onnx, tmp_path):
    sha = artifact_sha256(ext_onnx)
    with RunDir(tmp_path / "run") as rd:
        rel, got = rd.store(ext_onnx)
        stored = rd.root / rel
        assert got == sha and rel.name == f"{sha[:20]}.onnx"
        assert _locations(stored) == {f"{sha[:20]}.onnx.data"}  # the graph names the stored data file
        assert (stored.parent / f"{sha[:20]}.onnx.data").is_file()
        assert not ext_onnx.exists() and not (ext_onnx.parent / "weights.bin").exists()
        assert rd.verify(str(rel), sha) and artifact_sha256(stored) == sha
        ids = np.arange(24, dtype=np.int64).reshape(2, 12)
        np.testing.assert_array_equal(OrtCausalLM(stored).logits(ids), OrtCausalLM(tiny_onnx).logits(ids))
        # the same graph again: already stored, so the step's output (graph and data) is dropped
        again = _external(tiny_onnx, tmp_path / "again.onnx")
        assert rd.store(again) == (rel, sha)
        assert not again.exists() and not (tmp_path / "weights.bin").exists()


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_missing_or_corrupt_data_file_is_quarantined_and_rebuilt(ext_onnx, damage, tmp_path):
    with RunDir(tmp_path / "run") as rd:
        rel, sha = rd.store(ext_onnx)
        rd.record("k", {"artifact": str(rel)}, {str(rel): sha})
        assert rd.cached("k") is not None  # hashed once and remembered while the files stay as they are
        data = rd.root / f"{rel}.data"
        if damage == "delete":
            data.unlink()
        else:
            with open(data, "r+b") as f:
                f.seek(64)
                f.write(b"\x00\x01\x02\x03")
        assert rd.cached("k") is None  # the work is redone
        assert not (rd.root / rel).exists() and not data.exists()
        assert (rd.root / "quarantine" / rel.name).exists()
        assert (rd.root / "quarantine" / data.name).exists() == (damage == "corrupt")


def test_move_onnx_renames_the_data_beside_the_new_graph(ext_onnx, tmp_path):
    out = move_onnx(ext_onnx, tmp_path / "moved.onnx")
    assert external_data_files(out) == [tmp_path / "moved.onnx.data"]
    assert _locations(out) == {"moved.onnx.data"}
    assert not ext_onnx.exists()


def _split(n: int = 600) -> Split:
    ids = np.random.default_rng(0).integers(0, 256, n).astype(np.uint8)
    return Split("val", (), ids, "x")


@pytest.mark.parametrize("op", ["int8", "int4"])
def test_quantizing_an_external_data_graph_writes_external_data_and_scores(op, ext_onnx, tiny_onnx, tmp_path):
    from edgescale.compress.int4 import Int4WeightOnlyConfig, int4_weight_only
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic

    fn, cfg = {
        "int8": (int8_dynamic, Int8DynamicConfig()),
        "int4": (int4_weight_only, Int4WeightOnlyConfig(block_size=16)),
    }[op]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = fn(ext_onnx, cfg, StepContext(tmp_path / "a", log=lambda m: None))
    inline = fn(tiny_onnx, cfg, StepContext(tmp_path / "b", log=lambda m: None))
    assert has_external_data(out) and not has_external_data(inline)
    assert op_counts(out) == op_counts(inline)
    assert initializer_bytes(load_graph(out)) == initializer_bytes(onnx.load(str(inline)))
    with RunDir(tmp_path / "run") as rd:
        rel, _ = rd.store(out)
        got = onnx_loss(rd.root / rel, _split(), 32, 32, 512, batch_size=4)
    want = onnx_loss(inline, _split(), 32, 32, 512, batch_size=4)
    assert got.tokens == want.tokens > 0
    assert got.nats_per_token == pytest.approx(want.nats_per_token, rel=1e-6)  # the same quantized graph


def test_export_hf_moves_optimums_external_data_and_verifies(tmp_path, monkeypatch):
    """optimum writes ``model.onnx`` + ``model.onnx_data`` above 2 GB; a tiny Llama is made to."""
    import optimum.exporters.onnx as oe
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgescale.hf.export import export_and_verify

    real = oe.onnx_export_from_model

    def over_2gb(model, output, **kw):
        real(model, output, **kw)
        _external(f"{output}/model.onnx", f"{output}/model.onnx", location="model.onnx_data")

    monkeypatch.setattr(oe, "onnx_export_from_model", over_2gb)
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    check = export_and_verify(model, tmp_path / "m.onnx", 32, 18, 1e-4, 8, 0, release=True)
    assert check["greedy_tokens_identical"] == 8
    assert external_data_files(tmp_path / "m.onnx") == [tmp_path / "m.onnx.data"]
    assert all(p.is_meta for p in model.parameters())  # released before onnxruntime loaded the graph


def test_sizes_count_external_data_without_loading_it(ext_onnx, tiny_onnx):
    from edgescale.bench.bytes import onnx_weight_bytes
    from edgescale.export.canonical import artifact_bytes, external_data_files

    (data,) = external_data_files(ext_onnx)
    assert artifact_bytes(ext_onnx) == ext_onnx.stat().st_size + data.stat().st_size > ext_onnx.stat().st_size
    assert artifact_bytes(tiny_onnx) == tiny_onnx.stat().st_size
    assert onnx_weight_bytes(ext_onnx) == onnx_weight_bytes(tiny_onnx) > 0  # streamed bytes: the same weights


def test_a_failing_quantizer_leaves_no_inference_copy_beside_an_external_data_graph(ext_onnx, tmp_path, monkeypatch):
    """onnx refuses external data through a link, so such a graph is quantized where it is; the
    shape-inference copy onnxruntime writes beside it is gone when the step ends, even when it fails."""
    import onnx.shape_inference

    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic

    def fail_after_writing(model_path, output_path="", *args, **kwargs):
        Path(output_path).write_bytes(b"truncated")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", fail_after_writing)
    before = sorted(p.name for p in ext_onnx.parent.iterdir())
    (tmp_path / "work").mkdir()
    with pytest.raises(RuntimeError, match="killed mid-write"):
        int8_dynamic(ext_onnx, Int8DynamicConfig(), StepContext(tmp_path / "work", log=lambda m: None))
    assert sorted(p.name for p in ext_onnx.parent.iterdir()) == before
