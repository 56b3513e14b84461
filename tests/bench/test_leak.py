"""The causal leak: windowed against prefix-only NLL at a seeded sample of scored positions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgescale.bench.leak import LOSS_FRACTION, measure_leak, sample_positions
from edgescale.bench.loss import score
from edgescale.data.corpus import Split, eval_windows

V, CONTEXT, STRIDE = 32, 16, 8
MAX_TOKENS = CONTEXT + 9 * STRIDE  # exactly ten whole windows: the scorer scores nothing beyond them
TOKENS = np.random.default_rng(0).integers(0, V, size=400).astype(np.int64)
SPLIT = Split("validation", (), TOKENS.astype(np.int32), "sha")


def causal(ids: np.ndarray) -> np.ndarray:
    """Logits at t from a running sum of ids[: t + 1] only (exactly causal, any batch)."""
    state = np.cumsum(ids, axis=1, dtype=np.float64)[..., None]  # (B, T, 1)
    return 3 * np.sin(0.37 * state * (np.arange(V) + 1) + ids[..., None])  # (B, T, V)


def peeks(ids: np.ndarray) -> np.ndarray:
    """Causal, plus a boost to the next input token where there is one: a label leak."""
    out = causal(ids)
    b, t = np.meshgrid(np.arange(ids.shape[0]), np.arange(ids.shape[1] - 1), indexing="ij")
    out[b, t, ids[:, 1:]] += 4.0
    return out


def shifted(ids: np.ndarray) -> np.ndarray:
    """Causal, plus the call's global mean token on every logit: it moves logits, never the softmax."""
    return causal(ids) + ids.mean()


def per_call_scale(ids: np.ndarray) -> np.ndarray:
    """Causal logits rounded on a 4-bit grid whose scale is the whole call's largest |logit|, as a
    dynamic per-tensor activation scale is: what later tokens and batch companions change."""
    z = causal(ids) + 2.0 * (ids[..., None] % 5 == np.arange(V) % 5) * (ids.max(axis=1)[:, None, None] / V)
    s = np.abs(z).max() / 7
    return np.round(z / s) * s


def _leak(fn, **kw):
    kw = {"batch_size": 4, "k": 64, "seed": 0} | kw
    return measure_leak(fn, TOKENS, CONTEXT, STRIDE, MAX_TOKENS, **kw)


def test_an_exactly_causal_function_leaks_nothing():
    r = _leak(causal)
    assert r.positions == 64 and r.bytes == 64
    assert r.max_abs_logit_diff == 0.0
    assert r.leak_nats_per_token == 0.0 and r.leak_bits_per_byte_ci95 == (0.0, 0.0)
    assert r.windowed_nats_per_token == r.causal_nats_per_token > 0
    assert not r.significant and not r.flagged


def test_a_label_leak_is_negative_significant_and_flagged():
    r = _leak(peeks)
    lo, hi = r.leak_bits_per_byte_ci95
    assert r.windowed_bits_per_byte < r.causal_bits_per_byte  # fake-low: the future helps
    assert lo <= r.leak_bits_per_byte <= hi < 0
    assert r.leak_nats_ci95[1] < 0
    assert abs(r.leak_bits_per_byte) > LOSS_FRACTION * r.causal_bits_per_byte
    assert r.significant and r.flagged
    assert r.to_dict()["flagged"] is True


def test_a_logit_shift_the_softmax_ignores_moves_logits_but_not_the_loss():
    r = _leak(shifted)
    assert r.max_abs_logit_diff > 0.1
    assert abs(r.leak_nats_per_token) < 1e-12
    assert not r.flagged


def test_a_per_call_scale_leaks_and_the_windowed_sample_is_the_loss_as_scored():
    """Every position sampled: the windowed mean is exactly the scorer's loss, batch companions
    included (the per-call scale spans them), and it differs from the prefix-only loss."""
    everything = _leak(per_call_scale, k=10**6)
    assert everything.positions == MAX_TOKENS
    scored = score(per_call_scale, SPLIT, CONTEXT, STRIDE, MAX_TOKENS, batch_size=4)
    assert everything.windowed_nats_per_token == pytest.approx(scored.nats_per_token, rel=1e-12)
    assert everything.max_abs_logit_diff > 0 and everything.leak_nats_per_token != 0.0
    lo, hi = everything.leak_nats_ci95
    assert lo <= everything.leak_nats_per_token <= hi


def test_prefix_runs_are_exact_length_calls_of_one_sequence():
    """No padding and no companions in a prefix run: either would enter a dynamic scale."""
    calls: list[tuple[int, int]] = []

    def recording(ids: np.ndarray) -> np.ndarray:
        calls.append(ids.shape)
        return causal(ids)

    r = _leak(recording, k=20)
    windows = eval_windows(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS)
    prefix_calls = [s for s in calls if s[1] != CONTEXT]
    assert all(b == 1 for b, _ in prefix_calls)
    lengths = sorted(p + 1 for _, p in sample_positions(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS, 20, 0))
    assert sorted(t for _, t in calls if t != CONTEXT) == [t for t in lengths if t != CONTEXT]
    assert len(calls) <= r.positions + math.ceil(len(windows) / 4)
    grouped = _leak(causal, k=20, prefix_batch=8)  # batch-independent: the same answer in fewer calls
    assert grouped.causal_nats_per_token == pytest.approx(r.causal_nats_per_token, rel=1e-12)


def test_bits_per_byte_use_the_bytes_of_the_sampled_targets():
    one, two = _leak(peeks), _leak(peeks, token_bytes=np.full(TOKENS.size, 2))
    assert two.bytes == 2 * one.bytes
    assert two.causal_bits_per_byte == pytest.approx(one.causal_bits_per_byte / 2)
    assert two.leak_bits_per_byte == pytest.approx(one.leak_bits_per_byte / 2)
    assert one.causal_bits_per_byte == pytest.approx(one.causal_nats_per_token / math.log(2))


def test_the_sample_is_seeded_uniform_and_within_the_scored_positions():
    a = sample_positions(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS, 30, seed=1)
    assert a == sample_positions(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS, 30, seed=1)
    assert a != sample_positions(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS, 30, seed=2)
    windows = eval_windows(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS)
    assert len(set(a)) == 30 and a == sorted(a)
    assert all(windows[w][1] <= p < CONTEXT for w, p in a)  # only positions the scorer scores
    assert len(sample_positions(TOKENS.size, CONTEXT, STRIDE, MAX_TOKENS, 10**6, seed=1)) == MAX_TOKENS
    r1, r2 = _leak(peeks, seed=3), _leak(peeks, seed=3)
    assert {**r1.to_dict(), "seconds": 0} == {**r2.to_dict(), "seconds": 0}
    assert _leak(peeks, seed=4).causal_nats_per_token != r1.causal_nats_per_token


def test_a_dynamically_quantized_graph_leaks_and_its_float_export_does_not(tiny_onnx, tmp_path):
    """edgescale's own export and quantize.int8_dynamic: the float graph's prefix runs give the
    windowed logits exactly, the int8 graph's do not (its activation scales span the call)."""
    from edgescale.bench.ort_model import OrtCausalLM
    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
    from edgescale.compress.registry import StepContext

    q = int8_dynamic(tiny_onnx, Int8DynamicConfig(), StepContext(tmp_path, log=lambda m: None))
    tokens = np.random.default_rng(1).integers(0, 256, size=600)
    args = (tokens, 64, 32, 320)
    fp = measure_leak(OrtCausalLM(tiny_onnx).logits, *args, batch_size=4, k=32)
    assert fp.max_abs_logit_diff < 1e-5 and abs(fp.leak_nats_per_token) < 1e-6
    i8 = measure_leak(OrtCausalLM(q).logits, *args, batch_size=4, k=32)
    assert i8.max_abs_logit_diff > 1e-3 and i8.leak_nats_per_token != 0.0
    lo, hi = i8.leak_nats_ci95
    assert lo <= i8.leak_nats_per_token <= hi
