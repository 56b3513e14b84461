"""``frontier.png``: loss against three inference costs, one marker per recipe, fronts drawn.

Reads only the ``results.json`` dict, so it can be redrawn for old runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgescale.atomic import atomic_path
from edgescale.report.frontier import AXES, FrontierPoint, _dig, frontier

_PANELS = ("bytes_per_decoded_token", "host_decode_ms", "flops_per_token")
_MARKERS = "osD^v<>PX*"
_LOG_X = {"bytes_per_decoded_token": "B", "flops_per_token": "FLOP"}  # log-x panels and their unit


def _plain(text: object) -> str:
    """User text (study, size, recipe names) shown literally: a ``$`` must not start mathtext."""
    return str(text).replace("$", r"\$")


def _context(results: dict, key: str) -> Any:
    """The context a cost was computed at, from the variants themselves, else the measurement spec."""
    found = {_dig(v, "cost", key) for v in results.get("variants", [])} - {None}
    if len(found) == 1:
        return found.pop()
    return _dig(results, "measurement", "decode_context") if not found else "/".join(map(str, sorted(found)))


def _title(axis: str, results: dict) -> str:
    if axis == "bytes_per_decoded_token":
        return (
            f"bytes moved per decoded token\n(weights + fp32 KV cache at context {_context(results, 'decode_context')})"
        )
    if axis == "host_decode_ms":
        m = results.get("measurement", {})
        ctx, threads = m.get("decode_context", "?"), m.get("threads", "?")
        return f"decode latency, measured on host\n(p50 ms/token at context {ctx}, {threads} threads)"
    return f"FLOPs per token\n(attention at context {_context(results, 'flops_context')})"


def _log_x(ax: Any, unit: str, costs: list[float]) -> None:
    """Log x with engineering labels (``200 kB``); 1-2-5 ticks when the data span few decades."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    decades = math.log10(max(costs) / min(costs)) if min(costs) > 0 else math.inf
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    ax.xaxis.set_major_formatter(EngFormatter(unit=unit, places=0))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _front_line(ax: Any, points: list[FrontierPoint]) -> None:
    """The front as a staircase: the best loss reachable at each cost."""
    front = sorted((p.cost, p.loss) for p in points if p.on_front)
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="0.35", lw=1, ls="--", zorder=2)


def _panel(ax: Any, axis: str, variants: list[dict], recipes: list[str]) -> None:
    points = frontier(variants, axis)
    shown = [(v, p) for v, p in zip(variants, points, strict=True) if math.isfinite(p.cost) and math.isfinite(p.loss)]
    for k, recipe in enumerate(recipes):
        mine = [(v, p) for v, p in shown if v.get("recipe") == recipe]
        if not mine:
            continue
        xs, ys = [p.cost for _, p in mine], [p.loss for _, p in mine]
        ax.scatter(xs, ys, marker=_MARKERS[k % len(_MARKERS)], color=f"C{k}", s=55, zorder=3)
        dy = 4 if k % 2 == 0 else -12  # alternate recipes above/below: same-size points often share a cost
        for (v, _), x, y in zip(mine, xs, ys, strict=True):
            label = _plain(v.get("size", ""))
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, dy), fontsize=8, color="0.2")
    _front_line(ax, points)
    if not shown:
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="0.5")
    elif axis in _LOG_X:
        _log_x(ax, _LOG_X[axis], [p.cost for _, p in shown])
    ax.margins(x=0.08)  # room for the size labels right of the last point
    ax.set_xlabel(AXES[axis].label)
    ax.grid(True, which="major", alpha=0.3)


def _legend(fig: Any, recipes: list[str], target: float | None) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker=_MARKERS[k % len(_MARKERS)], color=f"C{k}", ms=8, label=_plain(r))
        for k, r in enumerate(recipes)
    ]
    handles.append(Line2D([], [], color="0.35", lw=1, ls="--", label="Pareto front"))
    if target:
        handles.append(Line2D([], [], color="tab:red", lw=0.8, ls=":", label=f"loss target {target:g} bits/byte"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)


def plot_frontier(results: dict, path: Path) -> Path:
    """Write the three-panel frontier PNG to ``path`` atomically and return ``path``.

    Validation loss (bits per byte) against bytes moved per decoded token, host decode
    latency and FLOPs per token; one marker and colour per recipe, points labelled with
    their size, each panel's Pareto front as a staircase.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(results.get("variants", []))
    recipes = [str(r) for r in dict.fromkeys(v.get("recipe") for v in variants)]
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(16, 5.6), sharey=True, layout="constrained")
    for ax, axis in zip(axes, _PANELS, strict=True):
        _panel(ax, axis, variants, recipes)
        ax.set_title(_title(axis, results), fontsize=10)
    axes[0].set_ylabel("held-out loss, bits per byte (validation split)")
    target = results.get("loss_target_bpb")
    if target:
        for ax in axes:
            ax.axhline(target, color="tab:red", lw=0.8, ls=":")
    _legend(fig, recipes, target)
    study = _plain(results.get("study", "?"))
    fig.suptitle(f"edgescale · {study} · loss of each ONNX file, run through onnxruntime", fontsize=11)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})  # no version or date: reproducible
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
