"""The loss's standard error: clustered by scoring window, checked against a direct computation,
kept per window for paired contrasts, re-expressed per text byte for a subword tokenizer, and
written beside a run's loss records by the pipeline."""

import json
import math

import numpy as np
import pytest

from edgescale.bench.loss import score
from edgescale.data.corpus import Corpus, Split
from edgescale.hf.tokens import TokenizedCorpus, to_bits_per_byte
from edgescale.results import nll

V, CONTEXT, STRIDE = 8, 16, 8
RNG = np.random.default_rng(0)
TOKENS = RNG.integers(0, V, 600).astype(np.int32)
SPLIT = Split("validation", (), TOKENS, "sha")
TABLE = RNG.normal(0, 2, (V, V))  # a bigram model: logits depend on the current token only


def bigram(ids: np.ndarray) -> np.ndarray:
    return TABLE[ids]  # (B, T) -> (B, T, V)


def _direct_window_nats(count: int) -> np.ndarray:
    """Per-window NLL computed apart from the scorer: targets 1..count in order, split into the
    first window's CONTEXT targets, then STRIDE per window, then the tail."""
    prev, tgt = TOKENS[:count].astype(int), TOKENS[1 : count + 1].astype(int)
    z = TABLE[prev]
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(count), tgt]
    sizes = [CONTEXT] + [STRIDE] * ((count - CONTEXT) // STRIDE)
    if sum(sizes) < count:
        sizes.append(count - sum(sizes))
    return np.array([c.sum() for c in np.split(nll, np.cumsum(sizes)[:-1])]), np.array(sizes)


def test_se_bpb_matches_a_direct_window_clustered_computation():
    res = score(bigram, SPLIT, CONTEXT, STRIDE, max_tokens=205, batch_size=3)  # 205: a partial tail window
    nats, sizes = _direct_window_nats(res.tokens)
    assert res.tokens == 205 and sizes[-1] == 205 - CONTEXT - STRIDE * ((205 - CONTEXT) // STRIDE)
    np.testing.assert_allclose(res.windows.nats, nats, rtol=1e-10)
    assert res.windows.bytes.tolist() == sizes.tolist() and res.windows.bytes.sum() == res.bytes
    y, b, w = nats / math.log(2), sizes.astype(float), nats.size
    r = y.sum() / b.sum()
    se = math.sqrt(w / (w - 1) * ((y - r * b) ** 2).sum()) / b.sum()
    assert res.bits_per_byte == pytest.approx(r, rel=1e-12)
    assert res.se_bpb == pytest.approx(se, rel=1e-9) and 0 < res.se_bpb < 0.2 * res.bits_per_byte
    assert "windows" not in res.to_dict() and res.to_dict()["se_bpb"] == res.se_bpb
    assert "windows" not in repr(res)


def _window_constant(levels: np.ndarray):
    """Logits whose NLL is the same at every position of a window and differs between windows:
    the target is always 0, and window k (in scoring order) puts logit levels[k] on it."""
    calls = iter(range(10**6))

    def fn(ids: np.ndarray) -> np.ndarray:
        out = np.zeros((*ids.shape, V))
        for row in range(ids.shape[0]):
            out[row, :, 0] = levels[next(calls)]
        return out

    return fn


def test_the_error_comes_from_the_spread_between_windows_not_between_tokens():
    zeros = Split("validation", (), np.zeros(400, np.int32), "z")
    n_windows = 1 + (200 - CONTEXT) // STRIDE
    levels = np.random.default_rng(1).normal(0, 1, n_windows)
    res = score(_window_constant(levels), zeros, CONTEXT, STRIDE, max_tokens=200, batch_size=4)
    per_token_bits = (np.log(np.exp(levels) + V - 1) - levels) / math.log(2)  # NLL of one token in window k
    counts = res.windows.bytes
    assert counts.size == n_windows
    token_level = np.repeat(per_token_bits, counts)
    naive = token_level.std(ddof=1) / math.sqrt(token_level.size)  # as if every token were independent
    y = per_token_bits * counts
    r = y.sum() / counts.sum()
    clustered = math.sqrt(n_windows / (n_windows - 1) * ((y - r * counts) ** 2).sum()) / counts.sum()
    assert res.se_bpb == pytest.approx(clustered, rel=1e-9)
    assert res.se_bpb > 2 * naive  # tokens in a window are one draw, not CONTEXT of them
    flat = score(_window_constant(np.full(n_windows, 0.7)), zeros, CONTEXT, STRIDE, max_tokens=200, batch_size=4)
    assert flat.se_bpb == pytest.approx(0.0, abs=1e-12)  # no spread between windows: no error


def test_one_window_has_no_error():
    res = score(bigram, SPLIT, CONTEXT, STRIDE, max_tokens=CONTEXT)
    assert res.windows.nats.size == 1 and math.isnan(res.se_bpb)


def test_subword_tokens_charge_each_window_its_own_text_bytes():
    widths = np.random.default_rng(2).integers(1, 5, TOKENS.size)  # text bytes per token
    tc = TokenizedCorpus(Corpus("t", {"validation": SPLIT}, V), {"validation": np.cumsum(widths)}, "fake")
    res = to_bits_per_byte(score(bigram, SPLIT, CONTEXT, STRIDE, max_tokens=205), tc, "validation")
    w = res.windows
    assert w.bytes.sum() == res.bytes and w.tokens.sum() == res.tokens == 205
    first = widths[1 : 1 + CONTEXT].sum()  # window 0 scores targets 1..CONTEXT
    assert w.bytes[0] == first and w.bytes[1] == widths[1 + CONTEXT : 1 + CONTEXT + STRIDE].sum()
    assert res.bits_per_byte == pytest.approx(w.bits_per_byte(), rel=1e-12)
    assert res.se_bpb == pytest.approx(w.se_bits_per_byte(), rel=1e-12) and res.se_bpb > 0


# -- the pipeline ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_keeps_every_variants_window_nll_beside_its_loss(tiny_run):
    from edgescale.report.degradation import fit_recipes
    from edgescale.results.io import parse_results

    _, out, _ = tiny_run
    data = json.loads((out / "results.json").read_text())
    for v in data["variants"]:
        for split, rec in v["loss"].items():
            w = nll.load(out, rec["nll_file"])
            assert w is not None, (v["variant_id"], split)
            assert w.bits_per_byte() == pytest.approx(rec["bits_per_byte"], rel=1e-9)
            assert rec["se_bpb"] == pytest.approx(w.se_bits_per_byte(), rel=1e-9) and rec["se_bpb"] > 0
    fits = fit_recipes(parse_results(data), out)
    pts = [p for f in fits.values() for p in f.points]
    assert pts and all(p.se_paired and p.se_bpb > 0 and p.within_noise is not None for p in pts)
