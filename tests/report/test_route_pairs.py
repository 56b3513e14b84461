"""Every compressed variant against the uncompressed (fp32) frontier at equal cost: the log-cost
interpolation, Δloss with its interval (paired over windows, unpaired, or none), no extrapolation."""

import math

import handmade_results as handmade
import numpy as np
import pytest

from edgescale.report import route_pairs
from edgescale.report.routes import routes
from edgescale.results import nll
from edgescale.results.nll import WindowNLL

V = handmade.variant
LOSS = {"s/fp32": 3.0, "m/fp32": 2.6, "l/fp32": 2.3, "l/int8": 2.4, "s/int8": 3.05}
# bytes per decoded token = weight bytes + 1000 (handmade): fp32 at 41k, 161k, 641k; l/int8 at 81k
BYTES = {"s/fp32": 40_000, "m/fp32": 160_000, "l/fp32": 640_000, "l/int8": 80_000, "s/int8": 10_000}
N = {"s": 10_000, "m": 40_000, "l": 160_000}


def _res(se: float | None = None, files: dict | None = None, loss: dict | None = None) -> dict:
    vs = []
    for vid, bpb in (loss or LOSS).items():
        v = V(vid, n=N[vid.split("/")[0]], val=bpb, bytes_=BYTES[vid], speedup=None)
        v["loss"]["validation"] |= {"se_bpb": se} if se is not None else {}
        v["loss"]["validation"] |= {"nll_file": files[vid]} if files else {}
        vs.append(v)
    return handmade.results(vs, target=None)


def _pairs(res: dict, root=None) -> dict:
    out = routes(handmade.typed(res), [], root=root)["pairs"]
    return {p["variant_id"]: p for p in out if p["axis"] == "bytes_per_decoded_token"}


def test_a_compressed_variant_is_matched_between_two_fp32_points_in_log_cost():
    p = _pairs(_res(se=0.01))["l/int8"]
    w = (math.log(161_000) - math.log(81_000)) / (math.log(161_000) - math.log(41_000))
    assert p["status"] == "ok" and (p["lower"], p["upper"]) == ("s/fp32", "m/fp32")
    assert p["weight_lower"] == pytest.approx(w)
    assert p["baseline_bpb"] == pytest.approx(w * 3.0 + (1 - w) * 2.6)
    assert p["delta_bpb"] == pytest.approx(2.4 - w * 3.0 - (1 - w) * 2.6)
    # unpaired: se of 1·L_v − w·L_a − (1−w)·L_b from independent errors
    half = 1.959963984540054 * 0.01 * math.sqrt(1 + w**2 + (1 - w) ** 2)
    assert p["delta_low"] == pytest.approx(p["delta_bpb"] - half) and p["delta_high"] < 0
    assert p["verdict"] == "better" and "unpaired" in p["interval"]
    # training compute: interpolated in log FLOPs (6·N·D, D = 1e6 for every size)
    base = math.exp(w * math.log(6 * 10_000 * 1e6) + (1 - w) * math.log(6 * 40_000 * 1e6))
    assert p["training_flops_ratio"] == pytest.approx(6 * 160_000 * 1e6 / base)


def test_below_the_smallest_fp32_point_is_out_of_range_with_no_number():
    p = _pairs(_res(se=0.01))["s/int8"]
    assert p["status"] == "out_of_range" and p["verdict"] == "out_of_range"
    assert p.get("delta_bpb") is None and p.get("weight_lower") is None and "no number" in p["statement"]


def test_with_no_uncompressed_point_on_an_axis_the_pair_says_so():
    # e.g. pretrained candidates: no training compute on record, so no fp32 point to match against
    res = handmade.typed(_res(se=0.01))
    v = next(x for x in res.variants if x.variant_id == "l/int8")
    axis = route_pairs.cost_axes(res, [])[0]
    p = route_pairs.pair(v, axis, [], lambda _: 1.0, None)
    assert p["status"] == "out_of_range" and "no uncompressed frontier" in p["statement"]


def test_an_interval_containing_zero_is_a_tie():
    p = _pairs(_res(se=0.3))["l/int8"]
    assert p["delta_low"] < 0 < p["delta_high"] and p["verdict"] == "tie" and "within noise" in p["statement"]


def test_no_recorded_error_gives_no_interval_and_no_verdict():
    p = _pairs(_res())["l/int8"]
    assert p["delta_low"] is None and p["verdict"] == "unknown"
    assert "no interval: per-window losses not recorded" in p["statement"]


def _windows(tmp_path) -> tuple[dict, dict]:
    """Sidecars on 400 shared windows whose difficulty varies far more than the models differ."""
    rng = np.random.default_rng(0)
    n_bytes = np.full(400, 128, np.int64)
    hard = rng.lognormal(0.0, 0.4, 400)
    files, losses = {}, {}
    for vid, bpb in LOSS.items():
        nats = bpb * math.log(2) * n_bytes * hard * (1 + 0.01 * rng.standard_normal(400))
        w = WindowNLL("v" * 64, 128, 128, nats, n_bytes)
        files[vid] = nll.save(tmp_path, vid, "validation", w)
        losses[vid] = w.bits_per_byte()
    return files, losses


def test_paired_windows_give_a_narrower_interval_than_unpaired(tmp_path):
    files, losses = _windows(tmp_path)
    se = max(nll.load(tmp_path, f).se_bits_per_byte() for f in files.values())
    paired = _pairs(_res(se=se, files=files, loss=losses), root=tmp_path)["l/int8"]
    unpaired = _pairs(_res(se=se, files=files, loss=losses), root=None)["l/int8"]  # no run directory
    assert "paired over 400" in paired["interval"] and "unpaired" in unpaired["interval"]
    assert paired["delta_bpb"] == pytest.approx(unpaired["delta_bpb"])
    width = paired["delta_high"] - paired["delta_low"]
    assert width < 0.3 * (unpaired["delta_high"] - unpaired["delta_low"])
    assert paired["delta_low"] <= paired["delta_bpb"] <= paired["delta_high"]
