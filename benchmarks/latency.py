"""Host latency predictor: measured vs predicted decode time for held-out models.

    .venv/bin/python benchmarks/latency.py [--threads 2] [--repeats 150] [--quick]

``edgescale.bench.host.calibrate_host`` times the calibration probes, the reference
ladder it fits on (random-weight 4-layer GPTs at widths 64, 192, 512, 1024 in four
weight classes: fp32, dynamic int8, 4-bit MatMulNBits at accuracy level 0 and 4) and the
held-out ladder (widths 128, 256, 384, 640, 768) in ONE interleaved run, so machine drift
hits all of them alike. Prints every point (measured, predicted with its interval, error,
noise), the share of held-out points within ±10%, the mean absolute error next to the
measurement noise floor, and each point's memory-bandwidth limit: (weights + KV bytes) /
the measured streaming rate at its working set. Two models: node times looked up in the
kernel tables (nn-Meter style: the host predictor) and, for comparison, the per-node
roofline (the structure device profiles use) fed with the host's measured rates. Each
prints its fitted factors against their plausible ranges and its interval: the 90%
quantile of the leave-one-out errors on the fitting ladder.

    .venv/bin/python benchmarks/latency.py --save m.pkl   # also keep the measurements
    .venv/bin/python benchmarks/latency.py --load m.pkl   # refit and print them, measuring nothing

On a shared machine, run it under ``chrt -f 20`` (root) so other load cannot preempt
the timed threads; the script says whether it ran with real-time priority.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import statistics
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgescale.bench.calibrate import HostCalibration
from edgescale.bench.graph_predict import (
    DISPATCH,
    DISPATCH_US_RANGE,
    EfficiencyFit,
    RooflineParams,
    fit_efficiency,
    host_components,
    roofline_components,
)
from edgescale.bench.host import calibrate_host, reference_models

HELD_OUT = (128, 256, 384, 640, 768)


def report(console, title, comps, fit, measured, samples, fitting, bw_limit) -> None:
    table = Table(title=title)
    for col in ("variant", "role", "measured ms", "predicted ms [interval]", "error", "noise ±", "BW limit ms"):
        table.add_column(col, justify="left" if col in ("variant", "role") else "right")
    errors, noise, inside = [], [], 0
    for k in sorted(measured, key=lambda k: (int(k.split("/")[0][1:]), k)):
        pred = fit.predict(comps[k])
        err = pred["ms"] / measured[k] - 1
        q1, q3 = np.percentile(samples[k], [25, 75])
        half_iqr = (q3 - q1) / 2 / measured[k]
        held = k not in fitting
        if held:
            inside += pred["low_ms"] <= measured[k] <= pred["high_ms"]
            errors.append(err)
            noise.append(half_iqr)
        table.add_row(
            k,
            "held out" if held else "fit",
            f"{measured[k]:.3f}",
            f"{pred['ms']:.3f} [{pred['low_ms']:.3f}, {pred['high_ms']:.3f}]",
            f"{err:+.1%}" + ("" if abs(err) <= 0.10 else " ✗"),
            f"{half_iqr:.1%}",
            f"{bw_limit[k]:.3f}",
        )
    console.print(table)
    within = sum(abs(e) <= 0.10 for e in errors)
    n = len(next(iter(samples.values())))
    se = statistics.median(1.2533 * x / math.sqrt(n) for x in noise)  # standard error of a median
    console.print(
        f"{title}: held-out points within ±10%: {within}/{len(errors)} ({within / len(errors):.0%}); "
        f"mean |error| {statistics.mean(abs(e) for e in errors):.1%} vs noise floor: per-sample half-IQR "
        f"{statistics.median(noise):.1%}, standard error of each median {se:.1%}"
    )
    console.print(
        f"  fitted scales { ({k: round(v, 3) for k, v in fit.scales.items()}) }; interval ±{fit.interval_rel:.1%} "
        f"(90% quantile of the {len(fit.loo_rel_errors)} leave-one-out errors on the fitting ladder); "
        f"held-out points inside it: {inside}/{len(errors)}"
    )


def ranges(fit: EfficiencyFit) -> str:
    return ", ".join(f"{k} {v:.3f} in [{fit.bounds[k][0]:g}, {fit.bounds[k][1]:g}]" for k, v in fit.scales.items())


def dispatch_line(cal, fit: EfficiencyFit, graphs: dict) -> str:
    """The fitted factors against their plausible ranges, and the fitted per-node fixed cost in µs."""
    roof = RooflineParams.from_calibration(cal, cal.llc_bytes)
    nodes = sum(len(g.nodes) for g in graphs.values())
    mean_us = 1000 * sum(roofline_components(g, roof).get(DISPATCH, 0.0) for g in graphs.values()) / nodes
    us = fit.scales.get(DISPATCH, 1.0) * mean_us
    lo, hi = DISPATCH_US_RANGE
    return (
        f"  factors (plausible ranges): {ranges(fit)}\n"
        f"  per-node fixed cost: probes {mean_us:.2f} us/node, fitted {us:.2f} us/node "
        f"({'inside' if lo <= us <= hi else 'OUTSIDE'} [{lo:g}, {hi:g}] us); GEMV fixed us {roof.gemv_us}"
    )


def measure(args, console) -> dict:
    realtime = os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
    held = (128,) if args.quick else HELD_OUT
    with tempfile.TemporaryDirectory(prefix="edgescale-latency-") as d:
        extra = reference_models(Path(d), held)
        console.print(f"timing probes and models interleaved, {args.repeats} repeats (real-time priority: {realtime})")
        cal, rep, graphs = calibrate_host(args.threads, args.quick, args.repeats, extra, progress=console.print)
    measured = {k: v.decode_ms_p50 for k, v in rep.variants.items()}
    samples = {k: v.decode_samples_ms for k, v in rep.variants.items()}
    return {"cal": cal.to_dict(), "measured": measured, "samples": samples, "graphs": graphs, "threads": args.threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="fewer widths and probes (a smoke run, not the figures)")
    ap.add_argument("--save", type=Path, help="also write the measurements (pickle) to refit them with --load")
    ap.add_argument("--load", type=Path, help="refit and print measurements a --save run wrote; measure nothing")
    args = ap.parse_args()
    console = Console(width=160)
    data = pickle.loads(args.load.read_bytes()) if args.load else measure(args, console)
    if args.save:
        args.save.write_bytes(pickle.dumps(data))
    cal, measured, samples, graphs = (
        HostCalibration.from_dict(data["cal"]),
        data["measured"],
        data["samples"],
        data["graphs"],
    )
    reference = list(cal.reference)
    stream = cal.streaming_gbps("fp32")
    lw, lr = np.log([s[0] for s in stream]), np.log([s[1] for s in stream])
    bw_limit = {
        k: g.working_set_bytes / (math.exp(np.interp(math.log(g.working_set_bytes), lw, lr)) * 1e9) * 1000
        for k, g in graphs.items()
    }
    console.print(
        f"{cal.cpu_model}, {data['threads']} threads, onnxruntime {cal.onnxruntime}, "
        f"LLC {cal.llc_bytes / 2**20:.0f} MiB; "
        f"decode at context {cal.context}; probe noise (median half-IQR) {cal.noise:.1%}\n"
        "fp32 weight streaming: "
        + ", ".join(f"{ws / 2**20:,.1f} MiB {gbps:.1f} GB/s" for ws, gbps in stream)
        + f"\nmatmul GOP/s (64 x 1024 GEMM): { {k: round(v) for k, v in cal.matmul_gops.items()} }"
    )
    tables = {k: host_components(g, cal) for k, g in graphs.items()}
    fit_t = fit_efficiency([tables[k] for k in reference], [measured[k] for k in reference])
    title = "kernel tables (the host predictor: edgescale predict --device host)"
    report(console, title, tables, fit_t, measured, samples, reference, bw_limit)
    console.print("  factors (plausible ranges): " + ranges(fit_t))
    roof = RooflineParams.from_calibration(cal, cal.llc_bytes)
    rl = {k: roofline_components(g, roof) for k, g in graphs.items()}
    fit_r = fit_efficiency([rl[k] for k in reference], [measured[k] for k in reference])
    title = "per-node roofline (the structure device profiles use, with host rates; for comparison)"
    report(console, title, rl, fit_r, measured, samples, reference, bw_limit)
    console.print(dispatch_line(cal, fit_r, graphs))


if __name__ == "__main__":
    main()
