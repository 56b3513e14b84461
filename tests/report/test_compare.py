"""compare on a hand-made run: loss changes against the baseline, speed-ups with their
intervals, size ratios, frontier membership on the chosen device, the scratch twin."""

import json

import handmade_results as handmade
import pytest

from edgescale.errors import UserError
from edgescale.report.compare import compare, table_lines

V = handmade.variant
FAST = {"decode_speedup_vs_fp32": {"speedup": 1.8, "low": 1.5, "high": 2.1, "within_noise": False, "slower": False}}
NOISE = {"decode_speedup_vs_fp32": {"speedup": 1.05, "low": 0.9, "high": 1.2, "within_noise": True, "slower": False}}
TWIN = {"size": "m-prune-scratch", "train_tokens": 1_100_000, "loss": {"validation": {"bits_per_byte": 2.2}}}


def _results():
    return handmade.typed(
        handmade.results(
            [
                V("m/fp32", n=4000, val=2.1, test=2.2, decode={"host": 2.0, "rpi5-8gb": 4.0}, file_bytes=16000),
                V(
                    "m/int8",
                    n=4000,
                    val=2.12,
                    test=2.21,
                    decode={"host": 1.1, "rpi5-8gb": 2.0},
                    file_bytes=5000,
                    speedup=FAST,
                ),
                V(
                    "m/prune",
                    n=2000,
                    val=2.3,
                    test=2.4,
                    decode={"host": 1.9, "rpi5-8gb": 3.0},
                    speedup=NOISE,
                    twin=TWIN,
                ),
                V("s/fp32", n=1000, val=2.5, test=2.6, decode={"host": 0.5, "rpi5-8gb": 1.0}),
            ]
        )
    )


def test_rows_against_the_baseline():
    out = compare(_results(), size="m", device="rpi5-8gb")
    assert out.baseline == "fp32" and [t.size for t in out.sizes] == ["m"]
    rows = {r.recipe: r for r in out.sizes[0].rows}
    assert rows["fp32"].delta_validation_bpb == 0.0
    assert rows["int8"].delta_validation_bpb == pytest.approx(0.02)
    assert rows["int8"].delta_test_bpb == pytest.approx(0.01)
    assert rows["int8"].host_decode_speedup.low == 1.5 and not rows["int8"].host_decode_speedup.within_noise
    assert rows["prune"].host_decode_speedup.within_noise
    assert rows["int8"].device_decode_speedup_predicted == pytest.approx(2.0)  # predicted on the Pi: a ratio only
    assert rows["int8"].file_ratio == pytest.approx(5000 / 16000)
    # the Pi's decode-latency front over every variant: s (fastest) and m/int8 (faster than m/fp32, near its loss)
    assert {r.recipe: r.on_frontier for r in rows.values()} == {"fp32": True, "int8": True, "prune": False}
    twin = rows["prune"].scratch_twin
    assert twin.pruned_minus_scratch_val_bpb == pytest.approx(0.1) and "worse" in twin.verdict
    assert rows["int8"].scratch_twin is None


def test_every_size_by_default_json_and_text():
    out = compare(_results())
    assert [t.size for t in out.sizes] == ["m", "s"] and out.frontier_axis == "host_decode_ms"
    json.dumps(out.data(), allow_nan=False)
    lines = table_lines(out)
    assert any(line.startswith("m/int8") and "[1.50, 2.10]" in line for line in lines)
    assert any("[0.90, 1.20]~" in line for line in lines)  # within noise is marked
    assert any("scratch twin: pruned + recovered is 0.1000 bits/byte worse" in line for line in lines)


def test_unknown_size_or_device_names_the_allowed_ones():
    with pytest.raises(UserError, match="--size: unknown size 'xl'; allowed: m, s"):
        compare(_results(), size="xl")
    with pytest.raises(UserError, match="--device: .*allowed: host, rpi5-8gb"):
        compare(_results(), device="pixel8")
