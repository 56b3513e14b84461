"""Calibration windows come from the train split, deterministically, and feed every graph input."""

import numpy as np
import pytest

from edgescale.compress.calibration import LMCalibrationReader, calibration_windows, context_tokens, window_tokens
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError


def _ctx(tmp_path, **kw):
    return StepContext(tmp_path, log=lambda m: None, **kw)


def test_windows_are_train_split_text_and_depend_only_on_the_seed(corpus, tmp_path):
    a = calibration_windows(_ctx(tmp_path, corpus=corpus), "op", 16, 32)
    again = calibration_windows(_ctx(tmp_path, corpus=corpus), "op", 16, 32)
    other_seed = calibration_windows(_ctx(tmp_path, corpus=corpus, seed=1), "op", 16, 32)
    assert a.shape == (16, 32) and a.dtype == np.int64
    assert np.array_equal(a, again) and not np.array_equal(a, other_seed)
    train = corpus["train"].tokens.tobytes()
    assert all(bytes(w.astype(np.uint8)) in train for w in a)


def test_supplied_windows_or_stream_take_precedence(corpus, tmp_path):
    given = np.arange(40 * 20).reshape(40, 20) % 256
    got = calibration_windows(_ctx(tmp_path, calibration=given, corpus=corpus), "op", 8, 16)
    assert np.array_equal(got, given[:8, :16])
    stream = corpus["validation"].tokens
    from_stream = calibration_windows(_ctx(tmp_path, calibration=stream), "op", 4, 16)
    assert all(bytes(w.astype(np.uint8)) in stream.tobytes() for w in from_stream)
    with pytest.raises(UserError, match="asks for 50 calibration windows"):
        calibration_windows(_ctx(tmp_path, calibration=given), "op", 50, 16)


def test_no_calibration_data_names_the_step(tmp_path):
    with pytest.raises(UserError, match="quantize.int8_static needs calibration data") as e:
        calibration_windows(_ctx(tmp_path), "quantize.int8_static", 4, 16)
    assert e.value.field == "quantize.int8_static"


def test_window_length_defaults_to_the_models_context(tiny_onnx, tiny_cfg):
    assert context_tokens(tiny_onnx) == tiny_cfg.block_size
    assert window_tokens(tiny_onnx, "op", None) == tiny_cfg.block_size
    assert window_tokens(tiny_onnx, "op", 16) == 16
    with pytest.raises(UserError, match="exceeds the model's context of 64"):
        window_tokens(tiny_onnx, "op", 65)


def test_reader_feeds_every_input_of_the_graph(tiny_onnx, corpus, tmp_path):
    import onnxruntime as ort

    windows = calibration_windows(_ctx(tmp_path, corpus=corpus), "op", 10, 24)
    reader = LMCalibrationReader(tiny_onnx, windows, batch_size=4)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    batches = list(reader)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2] and len(reader) == 3
    for feeds in batches:
        assert set(feeds) == names
        logits = session.run(["logits"], feeds)[0]
        assert logits.shape == (*feeds["input_ids"].shape, 256) and np.isfinite(logits).all()
    assert reader.get_next() is None
    reader.rewind()
    assert [len(list(part)) for part in reader.chunks(2)] == [2, 1]


def test_reader_refuses_a_graph_it_cannot_feed(relu_onnx):
    with pytest.raises(UserError, match="cannot build calibration feeds for input 'x'"):
        LMCalibrationReader(relu_onnx, np.zeros((1, 4), np.int64))


def test_a_users_module_without_kv_cache_is_calibrated_within_its_context(corpus, tmp_path):
    """No position_ids input: the position table is found from its Gather; input_ids is the only feed."""
    from edgescale.compress.int8_static import Int8StaticConfig, int8_static
    from edgescale.config import CustomModelConfig
    from edgescale.export.onnx import export_onnx_nocache
    from edgescale.models.checkpoint import build_model
    from edgescale.models.custom import CustomSpec

    cfg = CustomModelConfig(
        factory="edgescale.examples.encoder:encoder_lm",
        kwargs={"d_model": 32, "nhead": 2, "dim_feedforward": 64, "num_layers": 1},
        input="embeddings",
        embed_dim=32,
        layout="seq_first",
        causal="mask_arg",
        vocab_size=1000,
        block_size=24,
    )
    path = export_onnx_nocache(build_model(CustomSpec(cfg, 256, 24)).eval(), tmp_path / "custom.onnx")
    assert context_tokens(path) == 24
    out = int8_static(path, Int8StaticConfig(calibration_windows=8), _ctx(tmp_path, corpus=corpus))
    assert out.exists()
