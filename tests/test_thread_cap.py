"""EDGESCALE_MAX_THREADS caps every pool edgescale opens (the parallel test suite's workers set it)."""

from __future__ import annotations

import torch

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.config import TrainingConfig
from edgescale.models.gpt import GPTConfig
from edgescale.resources import MAX_THREADS_ENV, thread_cap
from edgescale.train.trainer import train


def test_the_cap_lowers_a_request_and_replaces_all_cores(monkeypatch):
    monkeypatch.delenv(MAX_THREADS_ENV, raising=False)
    assert thread_cap(4) == 4 and thread_cap(0) == 0
    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    assert thread_cap(4) == 1 and thread_cap(0) == 1 and thread_cap(1) == 1
    for junk in ("", "0", "-2", "two"):
        monkeypatch.setenv(MAX_THREADS_ENV, junk)
        assert thread_cap(3) == 3  # unset or not a positive integer: no cap


def test_training_and_onnxruntime_sessions_keep_to_the_cap(monkeypatch, tmp_path, corpus, tiny_onnx):
    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    before = torch.get_num_threads()
    try:
        cfg = TrainingConfig(batch_size=2, threads=2, min_tokens=1, max_tokens=64, eval_tokens=64,
                             cooled_eval_tokens=64, eval_every_tokens=10**6)  # fmt: skip
        train(GPTConfig(1, 2, 16, block_size=16), cfg, corpus, 64, 0, tmp_path / "run", "k")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    opts = OrtCausalLM(tiny_onnx).session.get_session_options()
    assert opts.intra_op_num_threads == 1
