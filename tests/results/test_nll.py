"""Paired and unpaired contrasts of losses from per-window NLL, and the NLL sidecars of a run."""

import math

import numpy as np
import pytest

from edgescale.results import nll

CONTEXT, STRIDE = 16, 8


# -- contrasts -------------------------------------------------------------------------------


def _w(nats, n_bytes=None, sha="s", stride=STRIDE):
    nats = np.asarray(nats, float)
    b = np.full(nats.size, 8, np.int64) if n_bytes is None else np.asarray(n_bytes, np.int64)
    return nll.WindowNLL(sha, CONTEXT, stride, nats, b)


def test_contrast_of_a_model_with_itself_is_exactly_zero():
    a = _w(np.random.default_rng(4).gamma(2.0, 4.0, 30), n_bytes=np.random.default_rng(5).integers(5, 9, 30))
    c = nll.paired_delta(a, a)
    assert c.paired and c.bpb == 0.0 and c.se_bpb == 0.0 and c.low == c.high == 0.0 and c.windows == a.nats.size


def test_paired_error_is_far_below_unpaired_when_the_models_agree_on_hard_windows():
    rng = np.random.default_rng(3)
    hard = rng.gamma(2.0, 4.0, 200)  # windows differ a lot in difficulty
    a, b = _w(hard + 0.05), _w(hard + rng.normal(0, 0.02, 200))
    paired = nll.paired_delta(a, b)
    sa, sb = a.se_bits_per_byte(), b.se_bits_per_byte()
    loose = nll.unpaired([(1.0, a.bits_per_byte(), sa), (-1.0, b.bits_per_byte(), sb)])
    assert loose.se_bpb == pytest.approx(math.hypot(sa, sb))
    assert paired.bpb == pytest.approx(a.bits_per_byte() - b.bits_per_byte(), rel=1e-9)
    assert loose.bpb == pytest.approx(paired.bpb, rel=1e-9)
    assert paired.se_bpb < 0.1 * loose.se_bpb and not loose.paired and loose.windows == 0
    assert paired.low < paired.bpb < paired.high
    assert paired.high - paired.bpb == pytest.approx(1.96 * paired.se_bpb, rel=1e-3)
    assert paired.low > 0  # the 0.05-nat shift per window is resolved paired ...
    assert loose.low < 0  # ... and lost in the window-to-window spread unpaired


def test_a_weighted_contrast_is_the_weighted_sum_of_losses():
    a, b, c = _w([3.0, 5.0, 4.0]), _w([2.0, 6.0, 4.5]), _w([1.0, 1.0, 2.0])
    got = nll.contrast([(1.0, a), (-0.5, b), (-0.5, c)])
    assert got.bpb == pytest.approx(a.bits_per_byte() - 0.5 * b.bits_per_byte() - 0.5 * c.bits_per_byte())


@pytest.mark.parametrize(
    "other",
    [
        _w([1.0, 2.0, 3.0], n_bytes=[8, 8, 9]),  # other bytes per window (another tokenizer)
        _w([1.0, 2.0, 3.0], sha="other"),  # another split
        _w([1.0, 2.0, 3.0], stride=4),  # another protocol
        _w([1.0, 2.0]),  # another window count
    ],
)
def test_windows_that_do_not_align_have_no_paired_contrast(other):
    assert nll.paired_delta(_w([1.0, 2.0, 3.0]), other) is None


# -- sidecars ---------------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    w = nll.WindowNLL("sha", CONTEXT, STRIDE, rng.gamma(2.0, 4.0, 12), rng.integers(20, 40, 12), np.full(12, STRIDE))
    rel = nll.save(tmp_path, "s1-kd/int8_dynamic", "test", w)
    assert rel == "nll/s1-kd__int8_dynamic.test.npz" and (tmp_path / rel).is_file()
    back = nll.load(tmp_path, rel)
    assert (back.split_sha256, back.context_length, back.stride) == (w.split_sha256, CONTEXT, STRIDE)
    assert back.nats.dtype == np.float64 and back.bytes.dtype == np.int64
    np.testing.assert_array_equal(back.nats, w.nats)
    np.testing.assert_array_equal(back.bytes, w.bytes)
    np.testing.assert_array_equal(back.tokens, w.tokens)
    assert nll.paired_delta(back, w).se_bpb == 0.0
    assert nll.load(tmp_path, "nll/absent.validation.npz") is None
    assert nll.load(None, rel) is None and nll.load(tmp_path, None) is None


def test_a_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        nll.save(tmp_path, "a/fp32", "validation", _w([1.0, 2.0]))
    assert list((tmp_path / "nll").iterdir()) == []  # neither the target nor its temp file
