"""Host latency predictor: measured vs predicted decode time for held-out models.

    .venv/bin/python benchmarks/latency.py [--threads 2] [--repeats 15]

Builds random-weight GPTs of several widths (latency does not depend on trained
weights) at three precisions (fp32, dynamic int8, 4-bit MatMulNBits), calibrates this
host (GEMV kernel times per precision on a K × N grid, GEMV bandwidth from cache to
DRAM), measures one decode step at context 128 for every variant (interleaved, one
run), fits the per-node model's factors on three widths and predicts the other four. Prints every point,
the share of held-out points within ±10%, the mean absolute error next to the
measurement noise floor, and each point's memory-bandwidth limit (bytes / bandwidth).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgescale.bench.calibrate import _quantized, calibrate, kernel_table
from edgescale.bench.cost import graph_cost
from edgescale.bench.measure import MeasureSpec, measure_variants
from edgescale.bench.predict import KERNEL_FEATURES, fit_host, kernel_features
from edgescale.export.onnx import export_onnx
from edgescale.models.gpt import GPT, GPTConfig

WIDTHS = (64, 128, 256, 384, 512, 768, 1024)
FIT_WIDTHS = (128, 384, 1024)  # the other four widths (12 points) are held out
CONTEXT = 128


def build(tmp: Path) -> dict[str, Path]:
    paths = {}
    for d in WIDTHS:
        fp32 = export_onnx(GPT(GPTConfig(4, d // 64 or 1, d, block_size=256), seed=0).eval(), tmp / f"d{d}.onnx")
        data = fp32.read_bytes()
        for precision in ("fp32", "int8", "int4"):
            p = tmp / f"d{d}-{precision}.onnx"
            p.write_bytes(_quantized(data, precision))
            paths[f"d{d}/{precision}"] = p
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as d:
        paths = build(Path(d))
        cal = calibrate(args.threads, max_mb=1024)
        table = kernel_table(args.threads)
        spec = MeasureSpec(prompt_len=16, decode_context=CONTEXT, repeats=args.repeats, threads=args.threads)
        report = measure_variants(paths, spec)
        costs = {k: graph_cost(p) for k, p in paths.items()}
    feats = {k: kernel_features(c, cal, table, CONTEXT) for k, c in costs.items()}
    measured = {k: v.decode_ms_p50 for k, v in report.variants.items()}
    fitting = [k for k in paths if int(k.split("/")[0][1:]) in FIT_WIDTHS]
    fit = fit_host([feats[k] for k in fitting], [measured[k] for k in fitting], KERNEL_FEATURES)

    table = Table(title=f"decode at context {CONTEXT}, {args.threads} threads, {cal.cpu_model}")
    for col in ("variant", "role", "weights MB", "measured ms", "predicted ms", "error", "BW limit ms", "noise ±"):
        table.add_column(col, justify="left" if col in ("variant", "role") else "right")
    errors, noise = [], []
    for k in paths:
        v = report.variants[k]
        pred = fit.predict_ms(feats[k])
        err = pred / measured[k] - 1
        nbytes = costs[k].decode_bytes(CONTEXT)
        q1, q3 = np.percentile(v.decode_samples_ms, [25, 75])
        half_iqr = (q3 - q1) / 2 / v.decode_ms_p50
        held = k not in fitting
        if held:
            errors.append(err)
            noise.append(half_iqr)
        table.add_row(
            k,
            "held out" if held else "fit",
            f"{costs[k].weight_bytes / 1e6:.1f}",
            f"{measured[k]:.3f}",
            f"{pred:.3f}",
            f"{err:+.1%}",
            f"{nbytes / cal.bandwidth(nbytes) * 1000:.3f}",
            f"{half_iqr:.1%}",
        )
    console.print(table)
    within = sum(abs(e) <= 0.10 for e in errors)
    console.print(
        f"held-out points within ±10%: {within}/{len(errors)} ({within / len(errors):.0%}); "
        f"mean |error| {statistics.mean(abs(e) for e in errors):.1%} vs measurement noise "
        f"(median half-IQR) {statistics.median(noise):.1%}"
    )
    g = cal.gemv["fp32"]
    console.print(
        f"fitted: {fit.coef}; fp32 GEMV {g[0]['gbps']:.0f} GB/s (1 MiB) → {g[-1]['gbps']:.0f} GB/s "
        f"({g[-1]['weight_bytes'] / 2**20:,.0f} MiB); matmul GOP/s {cal.matmul_gops}"
    )


if __name__ == "__main__":
    main()
