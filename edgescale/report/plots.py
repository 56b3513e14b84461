"""``frontier.png``: loss against three inference costs, one marker per recipe, fronts drawn."""

from __future__ import annotations

import math
from pathlib import Path

from edgescale.atomic import atomic_path
from edgescale.report.frontier import AXES, frontier

_PANELS = ("bytes_per_decoded_token", "host_decode_ms", "flops_per_token")
_MARKERS = "osD^v<>PX*"


def _title(axis: str, results: dict) -> str:
    m = results.get("measurement", {})
    ctx = m.get("decode_context", "?")
    if axis == "bytes_per_decoded_token":
        return f"bytes per decoded token\n(weights + fp32 KV at context {ctx})"
    if axis == "host_decode_ms":
        return f"decode latency, measured on host\n(p50 ms/token at context {ctx}, {m.get('threads', '?')} threads)"
    return f"FLOPs per token\n(at context {ctx})"


def plot_frontier(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = results["variants"]
    recipes = list(dict.fromkeys(v["recipe"] for v in variants))
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(16, 5.2), constrained_layout=True)
    for ax, axis in zip(axes, _PANELS, strict=True):
        points = {p.variant_id: p for p in frontier(variants, axis)}
        for k, recipe in enumerate(recipes):
            vs = [v for v in variants if v["recipe"] == recipe and math.isfinite(points[v["variant_id"]].cost)]
            xs = [points[v["variant_id"]].cost for v in vs]
            ys = [points[v["variant_id"]].loss for v in vs]
            ax.scatter(xs, ys, marker=_MARKERS[k % len(_MARKERS)], s=55, label=recipe, zorder=3)
            for v, x, y in zip(vs, xs, ys, strict=True):
                ax.annotate(v["size"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = sorted((p.cost, p.loss) for p in points.values() if p.on_front)
        if front:
            ax.step(
                [c for c, _ in front],
                [loss for _, loss in front],
                where="post",
                color="0.4",
                lw=1,
                ls="--",
                label="Pareto front",
                zorder=2,
            )
        if axis != "host_decode_ms":
            ax.set_xscale("log")
        ax.set_xlabel(AXES[axis].label)
        ax.set_title(_title(axis, results), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"held-out loss, bits per byte ({results.get('protocol', {}).get('split', 'validation')})")
    target = results.get("loss_target_bpb")
    for ax in axes:
        if target:
            ax.axhline(target, color="tab:red", lw=0.8, ls=":", label=f"target {target:g}")
    axes[-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"edgescale · {results['study']} · loss measured on the ONNX files through onnxruntime", fontsize=11)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    return Path(path)


def plot_scaling(results: dict, path: Path) -> Path | None:
    """``scaling.png``: the run's cooled checkpoints and the law fitted to them (if fitted)."""
    from edgescale.scaling.laws import Chinchilla
    from edgescale.scaling.report import plot_law

    sc = results.get("scaling", {})
    if sc.get("status") != "fitted":
        return None
    f, pts = sc["law"], sc["points"]
    law = Chinchilla(E=f["E"], A=f["A"], B=f["B"], alpha=f["alpha"], beta=f["beta"], name="fit")
    return plot_law(
        [p["N"] for p in pts],
        [p["D"] for p in pts],
        [p["bits_per_byte"] for p in pts],
        law,
        {k: tuple(v) for k, v in f["ci"].items()},
        "bits per byte, validation",
        path,
        subtitle=f"{f['n_points']} cooled checkpoints · RMSE(log) {f['rmse_log']:.4f} · R²(log) {f['r2_log']:.3f}",
    )
