"""The measured time verdict between the two routes on a measured device (the host).

The ratio is the train-small variant's decode p50 over the train-big-and-compress one's
(below 1: training small decodes faster). ``results.json`` keeps no raw samples, so its
interval is built from what it does keep, taking the wider of two:

- the worker processes' decode p50s, paired by process (every process times every variant,
  interleaved): a bootstrap of the ratio of medians over processes
  (:func:`edgescale.bench.measure.bootstrap_ratio_ci`), the between-process spread;
- the A/A control's interval around its own point, carried over to this ratio: how far the
  ratio of two p50s timed in this run moves when nothing differs.

Speed-ups against the baseline cannot be combined instead: each size's are against its own
baseline (``{size}/<baseline recipe>``), and the two routes are different sizes by construction.
A ratio whose interval reaches into [1/(1 + floor), 1 + floor] (the A/A noise floor) is a tie.
"""

from __future__ import annotations

from edgescale.bench.measure import bootstrap_ratio_ci
from edgescale.results.schema import HostLatency, Measurement, Variant

SMALL, BIG = "train small", "train big and compress"


def _by_process(small: HostLatency, big: HostLatency) -> tuple[float, float] | None:
    a, b = small.decode_ms_p50_by_process, big.decode_ms_p50_by_process
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    _, low, high = bootstrap_ratio_ci(a, b, seed=0)
    return low, high


def _aa_spread(point: float, m: Measurement | None) -> tuple[float, float] | None:
    aa = m.aa if m is not None else None
    if aa is None or not aa.decode.speedup > 0:
        return None
    return point * aa.decode.low / aa.decode.speedup, point * aa.decode.high / aa.decode.speedup


def _floor(small: HostLatency, m: Measurement | None) -> float:
    if m is not None and m.aa is not None:
        return m.aa.noise_floor["decode"]
    return (small.noise_floor or {}).get("decode", 0.0)


def time_verdict(small_v: Variant, big_v: Variant, device: str, m: Measurement | None) -> dict | None:
    """Decode p50 small/big with its interval and verdict; None where the device did not measure both."""
    small, big = small_v.latency.get(device), big_v.latency.get(device)
    if not (isinstance(small, HostLatency) and isinstance(big, HostLatency)):
        return None
    if not (small.decode_ms_p50 and big.decode_ms_p50):
        return None
    point = small.decode_ms_p50 / big.decode_ms_p50
    parts = [(x, how) for x, how in (
        (_by_process(small, big), f"bootstrap over {len(small.decode_ms_p50_by_process or [])} worker processes' "
         "paired p50s"),
        (_aa_spread(point, m), "the A/A interval's relative width"),
    ) if x is not None]  # fmt: skip
    floor = _floor(small, m)
    pair = (
        f"decode p50 {small_v.variant_id} {small.decode_ms_p50:.4g} ms vs {big_v.variant_id} "
        f"{big.decode_ms_p50:.4g} ms, small/big {point:.3f}×"
    )
    out = {"by": "decode_ms_p50", "ratio": point, "noise_floor": floor, "faster": None}
    if not parts:
        how = "no interval: neither per-process p50s nor an A/A control recorded"
        return out | {"ratio_low": None, "ratio_high": None, "uncertainty": how,
                      "statement": f"{device}: {pair}; cannot be known ({how})"}  # fmt: skip
    low, high = min(lo for (lo, _), _ in parts), max(hi for (_, hi), _ in parts)
    how = "the wider of " + " and ".join(h for _, h in parts) if len(parts) > 1 else parts[0][1]
    band = f"A/A noise floor ±{floor:.1%}"
    out |= {"ratio_low": low, "ratio_high": high, "uncertainty": how}
    ci = f"[{low:.3f}, {high:.3f}]"
    if low <= 1 + floor and high >= 1 / (1 + floor):
        return out | {"statement": f"{device}: a tie in measured decode time ({pair} {ci}; {band}; {how})"}
    name = SMALL if high < 1 else BIG
    return out | {"faster": name, "statement": f"{device}: {name} decodes faster ({pair} {ci}; {band}; {how})"}
