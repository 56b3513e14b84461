"""The report's measured-side figures: frontiers, the scaling fit, the training loss curves.

Each function reads only the ``results.json`` dict (so it can be redrawn for old runs),
writes one PNG atomically and returns its path, or None when the run has nothing to draw.
Shared drawing helpers (:func:`save`, :func:`recipe_style`) are used by
:mod:`edgescale.report.charts` too, so a recipe has the same marker and colour everywhere.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgescale.atomic import atomic_path
from edgescale.report.frontier import FrontierPoint, axes_for, device_axis, frontier
from edgescale.results.schema import HostLatency, Results, Scaling, Variant
from edgescale.scaling.fit import bootstrap
from edgescale.scaling.laws import Chinchilla

FIXED_PANELS = ("bytes_per_decoded_token", "flops_per_token", "file_bytes", "peak_memory_bytes")
_MARKERS = "osD^v<>PX*"
_UNITS = {"bytes_per_decoded_token": "B", "flops_per_token": "FLOP", "file_bytes": "B", "peak_memory_bytes": "B"}
N_BOOT_BAND = 100  # bootstrap refits for the band of a run that did not store its fit's


def plain(text: object) -> str:
    """User text (study, size, recipe names) shown literally: a ``$`` must not start mathtext."""
    return str(text).replace("$", r"\$")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically (no version or date in the file: reproducible) and close it."""
    plt = pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        plt.close(fig)
    return Path(path)


def recipes_of(results: Results) -> list[str]:
    return list(dict.fromkeys(v.recipe for v in results.variants))


def recipe_style(recipes: Sequence[str], recipe: str) -> dict:
    """Marker and colour of ``recipe``: its position in the run's recipe order."""
    k = list(recipes).index(recipe) if recipe in recipes else len(recipes)
    return {"marker": _MARKERS[k % len(_MARKERS)], "color": f"C{k % 10}"}


def log_x(ax: Any, unit: str, values: Sequence[float]) -> None:
    """Log x with engineering labels (``200 kB``; ``unit="ms"``: ``0.25 ms``); 1-2-5 ticks when
    the data span few decades."""
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

    values = [x for x in values if x > 0 and math.isfinite(x)]
    ax.set_xscale("log")
    decades = math.log10(max(values) / min(values)) if values else math.inf
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    ms = FuncFormatter(lambda x, _: f"{x:.3g} ms")
    ax.xaxis.set_major_formatter(ms if unit == "ms" else EngFormatter(unit=unit, places=0))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _front_line(ax: Any, points: list[FrontierPoint]) -> None:
    """The front as a staircase: the best loss reachable at each cost."""
    front = sorted((p.cost, p.loss) for p in points if p.on_front)
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="0.35", lw=1, ls="--", zorder=2)


def _xerr(variants: Sequence[Variant], device: str | None, xs: Sequence[float]) -> np.ndarray | None:
    """Horizontal bars for a device's latency: p50..p90 measured, the interval predicted."""
    if device is None:
        return None
    lows, highs = [], []
    for v, x in zip(variants, xs, strict=True):
        lat = v.latency.get(device)
        if lat is None:
            lo = hi = x
        elif isinstance(lat, HostLatency):
            lo, hi = x, lat.decode_ms_p90
        else:
            lo, hi = lat.decode_ms_low, lat.decode_ms_high
        lows.append(max(0.0, x - (x if lo is None else lo)))
        highs.append(max(0.0, (x if hi is None else hi) - x))
    return np.array([lows, highs])


def _panel(ax: Any, axis: str, variants: list[Variant], recipes: list[str], device: str | None = None) -> None:
    points = frontier(variants, axis)
    shown = [(v, p) for v, p in zip(variants, points, strict=True) if math.isfinite(p.cost) and math.isfinite(p.loss)]
    for k, recipe in enumerate(recipes):
        mine = [(v, p) for v, p in shown if v.recipe == recipe]
        if not mine:
            continue
        xs, ys = [p.cost for _, p in mine], [p.loss for _, p in mine]
        style = recipe_style(recipes, recipe)
        err = _xerr([v for v, _ in mine], device, xs)
        if err is not None:
            ax.errorbar(xs, ys, xerr=err, fmt="none", ecolor=style["color"], alpha=0.45, lw=1, zorder=2)
        ax.scatter(xs, ys, s=55, zorder=3, **style)
        dy = 4 if k % 2 == 0 else -12  # alternate recipes above/below: same-size points often share a cost
        for (v, _), x, y in zip(mine, xs, ys, strict=True):
            ax.annotate(plain(v.size), (x, y), textcoords="offset points", xytext=(5, dy), fontsize=8)
    _front_line(ax, points)
    if not shown:
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="0.5")
    elif device is not None:
        log_x(ax, "ms", [p.cost for _, p in shown])
    else:
        log_x(ax, _UNITS.get(axis, ""), [p.cost for _, p in shown])
    ax.margins(x=0.08)  # room for the size labels right of the last point
    ax.grid(True, which="major", alpha=0.3)


def _legend(fig: Any, recipes: list[str], target: float | None, extra: Sequence[Any] = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", ms=8, label=plain(r), **recipe_style(recipes, r)) for r in recipes]
    handles.append(Line2D([], [], color="0.35", lw=1, ls="--", label="Pareto front"))
    if target:
        handles.append(Line2D([], [], color="tab:red", lw=0.8, ls=":", label=f"loss target {target:g} bits/byte"))
    handles += list(extra)
    legend(fig, handles)


def legend(fig: Any, handles: Sequence[Any]) -> None:
    """One legend under the figure, in as many columns as its width holds."""
    cols = max(1, min(len(handles), int(fig.get_figwidth() / 2.3)))
    fig.legend(handles=list(handles), loc="outside lower center", ncol=cols, fontsize=9, frameon=False)


def plain_log(ax: Any, which: str = "xy") -> None:
    """Log axes labelled with plain numbers (``0.2``, ``1``, ``50``), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        axis.set_minor_formatter(NullFormatter())


def _grid(n: int, ncols: int, width: float = 4.6, height: float = 4.0) -> tuple[Any, list[Any]]:
    plt = pyplot()
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows + 0.9), layout="constrained", squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _finish_frontier(fig: Any, axes: list[Any], results: Results, title: str, extra: Sequence[Any] = ()) -> None:
    target = results.loss_target_bpb
    for ax in axes:
        if target:
            ax.axhline(target, color="tab:red", lw=0.8, ls=":")
        ax.set_ylabel("held-out loss, bits/byte (validation)", fontsize=9)
    _legend(fig, recipes_of(results), target, extra)
    fig.suptitle(f"edgescale · {plain(results.study)} · {title}", fontsize=11)


def plot_frontier(results: Results, path: Path) -> Path:
    """Loss against the device-independent costs: bytes moved per decoded token, FLOPs per
    token, ONNX file size, peak memory (those the variants have); one marker and colour per
    recipe, points labelled with their size, each panel's Pareto front as a staircase."""
    variants = results.variants
    axes_info = axes_for(variants)
    panels = [a for a in FIXED_PANELS if any(axes_info[a].get(v) is not None for v in variants)]
    panels = panels or list(FIXED_PANELS[:1])
    fig, axes = _grid(len(panels), 4)
    for ax, axis in zip(axes, panels, strict=True):
        _panel(ax, axis, variants, recipes_of(results))
        ax.set_title(_wrap(axes_info[axis].label), fontsize=9)
    _finish_frontier(fig, axes, results, "loss of each ONNX file (onnxruntime) vs device-independent cost")
    return save(fig, path, dpi=100)


def _wrap(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(plain(text), width))


def devices_of(results: Results) -> list[str]:
    return results.devices()


def plot_device_frontiers(results: Results, path: Path) -> Path | None:
    """Loss against decode latency on every device of the run, one panel each: measured on
    the host (bars p50..p90), predicted elsewhere (bars: the prediction's interval)."""
    from matplotlib.lines import Line2D

    variants = results.variants
    axes_info = axes_for(variants)
    devices = [d for d in devices_of(results) if device_axis(d, "decode_ms") in axes_info]
    if not devices:
        return None
    fig, axes = _grid(len(devices), 3)
    for ax, dev in zip(axes, devices, strict=True):
        axis = device_axis(dev, "decode_ms")
        _panel(ax, axis, variants, recipes_of(results), device=dev)
        source = axes_info[axis].source
        how = "MEASURED on this host" if source == "measured" else f"{source.upper()} from the device profile"
        ax.set_title(f"{plain(dev)} · {how}\n{_wrap(axes_info[axis].label, 60)}", fontsize=9)
        ax.set_xlabel("decode latency per token (log)", fontsize=9)
    bars = Line2D([], [], color="0.4", lw=1, label="bars: p50..p90 (measured) / 95% interval (predicted)")
    _finish_frontier(fig, axes, results, "loss vs decode latency per device", extra=[bars])
    return save(fig, path, dpi=90)


def _law(results: Results):
    f = results.scaling.law
    return Chinchilla(E=f.E, A=f.A, B=f.B, alpha=f.alpha, beta=f.beta, name="fit")


def law_draws(sc: Scaling, n_boot: int = N_BOOT_BAND, seed: int = 0) -> np.ndarray:
    """Bootstrap refits of the run's law to its cooled points, (n, 5) as (E, A, B, α, β) in
    bits per byte: the fit's own (``scaling.bootstrap``), or for a run written before they
    were stored, ``n_boot`` refits by the same resampling
    (:func:`edgescale.scaling.fit.bootstrap`; the Huber loss is on log residuals, so fitting
    in bits per byte only rescales E, A, B)."""
    if (sc.bootstrap or {}).get("rows"):
        return np.array(sc.bootstrap["rows"], dtype=float)
    pts = sc.points
    log_n, log_d = np.log([p.N for p in pts]), np.log([p.D for p in pts])
    log_l = np.log([p.bits_per_byte for p in pts])
    f = sc.law
    theta = np.array([math.log(f.A), math.log(f.B), math.log(f.E), f.alpha, f.beta])
    with np.errstate(over="ignore", invalid="ignore"):
        a, b, e, al, be = bootstrap(theta, log_n, log_d, log_l, n_boot, seed, groups=[p.size for p in pts]).T
        draws = np.column_stack([np.exp(e), np.exp(a), np.exp(b), al, be])
    # a resample of few points can run off to an unbounded refit (exp overflows): not a draw
    return draws[np.isfinite(draws).all(axis=1)]


def _band(draws: np.ndarray, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(draws):  # no usable refit: no band (fill_between draws nothing for NaN)
        return np.full(np.broadcast(n, d).shape, np.nan), np.full(np.broadcast(n, d).shape, np.nan)
    e, a, b, al, be = (draws[:, i : i + 1] for i in range(5))
    with np.errstate(over="ignore", invalid="ignore"):
        curves = e + a / n[None, :] ** al + b / d[None, :] ** be
    lo, hi = np.nanquantile(curves, [0.025, 0.975], axis=0)
    return lo, hi


def _ladder_tokens(results: Results) -> tuple[np.ndarray, np.ndarray]:
    sizes = sorted((s for s in results.sizes if not s.distilled_from and s.params_total), key=lambda s: s.params_total)
    return np.log([s.params_total for s in sizes]), np.log([s.train_tokens for s in sizes])


def plot_scaling(results: Results, path: Path) -> Path | None:
    """``scaling.png``: the cooled checkpoints with the fitted law and its bootstrap 95% band,
    against tokens (one curve per size) and against N at each size's training budget, with
    the exported fp32 models' ONNX loss and the plan for the target; None if not fitted."""
    sc = results.scaling
    if sc.status != "fitted" or not sc.points:
        return None
    plt = pyplot()
    law, f, pts = _law(results), sc.law, sc.points
    draws = law_draws(results.scaling)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.0), layout="constrained")
    ns = sorted({p.N for p in pts})
    cmap = plt.get_cmap("viridis")
    for i, n in enumerate(ns):
        color = cmap(i / max(1, len(ns) - 1))
        mine = [p for p in pts if n == p.N]
        ds = np.geomspace(min(p.D for p in pts) / 1.5, max(p.D for p in pts) * 1.5, 80)
        lo, hi = _band(draws, np.full_like(ds, n), ds)
        ax1.fill_between(ds, lo, hi, color=color, alpha=0.15, lw=0)
        ax1.plot(ds, law.loss(n, ds), color=color, lw=1.2, label=f"N = {n:,.0f}")
        ax1.scatter([p.D for p in mine], [p.bits_per_byte for p in mine], color=color, s=28, zorder=3)
    ax1.set_xscale("log")
    ax1.set_xlabel("training tokens D (cooled checkpoints)")
    ax1.set_ylabel("validation loss, bits/byte")
    ax1.set_title(
        f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}  "
        f"(bands: bootstrap 95%, {len(draws)} refits)\n{f.n_points if f.n_points is not None else len(pts)} points · "
        f"RMSE(log) {_num(f.rmse_log, '.4f')} · R²(log) {_num(f.r2_log, '.3f')}",
        fontsize=9,
    )
    ax1.legend(fontsize=8)
    _scaling_vs_n(ax2, results, law, draws)
    fig.suptitle(f"edgescale · {plain(results.study)} · scaling law fitted to the family", fontsize=11)
    return save(fig, path)


def _scaling_vs_n(ax: Any, results: Results, law: Any, draws: np.ndarray) -> None:
    log_n, log_d = _ladder_tokens(results)
    plan = results.scaling.plan_for_target
    target = results.loss_target_bpb
    n_hi = max(math.exp(log_n.max()) * 4, (plan and plan.n_params) or 0)
    grid = np.geomspace(math.exp(log_n.min()) / 2, n_hi * 1.5, 120)
    d = np.exp(np.interp(np.log(grid), log_n, log_d))
    lo, hi = _band(draws, grid, d)
    ax.fill_between(grid, lo, hi, color="C0", alpha=0.18, lw=0, label="bootstrap 95% band")
    ax.plot(grid, law.loss(grid, d), color="C0", lw=1.4, label="law at the ladder's D(N) (flat beyond it)")
    finals = {}
    for p in results.scaling.points:
        if finals.get(p.N, (0, 0))[0] <= p.D:
            finals[p.N] = (p.D, p.bits_per_byte)
    ax.scatter(list(finals), [y for _, y in finals.values()], color="C0", s=30, zorder=3, label="cooled, full budget")
    base = recipes_of(results)[0] if results.variants else None
    sizes = {s.size: s for s in results.sizes if not s.distilled_from}
    onnx = [(sizes[v.size].params_total, v.bpb("validation")) for v in results.variants
            if v.recipe == base and v.size in sizes]  # fmt: skip
    onnx = [(n, y) for n, y in onnx if y is not None]
    if onnx:
        ax.scatter(*zip(*onnx, strict=True), facecolors="none", edgecolors="k", marker="s", s=50, zorder=4,
                   label=f"{plain(base)} ONNX file, validation")  # fmt: skip
    if target:
        ax.axhline(target, color="tab:red", lw=0.8, ls=":", label=f"target {target:g}")
    if plan and plan.status == "ok" and plan.predicted_loss_bpb is not None:
        ax.scatter([plan.n_params], [plan.predicted_loss_bpb], marker="*", s=160, color="tab:red", zorder=5,
                   label=f"plan: N={plan.n_params:.3g}, D={plan.n_tokens:.3g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("total parameters N")
    ax.set_ylabel("validation loss, bits/byte")
    ax.set_title("loss vs model size at each size's training budget", fontsize=9)
    ax.legend(fontsize=8)


def _num(x: Any, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def plot_loss_curves(results: Results, path: Path) -> Path | None:
    """Training loss curves per size: validation (solid) and train (dashed) bits per byte
    against tokens in the stable phase, and the cooled (decayed) checkpoints as markers."""
    sizes = [s for s in results.sizes if s.curve]
    if not sizes:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
    for i, s in enumerate(sizes):
        color = f"C{i % 10}"
        stable = [c for c in s.curve if not c.cooled]
        cooled = [c for c in s.curve if c.cooled]
        name = plain(s.size) + (f" (distilled from {plain(s.distilled_from)})" if s.distilled_from else "")
        if stable:
            ax.plot([c.tokens for c in stable], [c.val_bpb for c in stable], color=color, lw=1.4, label=name)
            train = [c for c in stable if c.train_bpb is not None]
            ax.plot([c.tokens for c in train], [c.train_bpb for c in train], color=color, lw=1, ls="--")
        if cooled:
            ax.scatter([c.tokens for c in cooled], [c.val_bpb for c in cooled], color=color, marker="v", s=30,
                       zorder=3, label=None if stable else name)  # fmt: skip
    target = results.loss_target_bpb
    if target:
        ax.axhline(target, color="tab:red", lw=0.8, ls=":", label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("bits/byte")
    ax.grid(True, alpha=0.3)
    ax.set_title("training curves: validation (solid), train (dashed), cooled checkpoints (▼)", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    return save(fig, path)
