"""The report's analysis figures: recipe comparison, degradation law, latency, training plan.

Drawn from ``results.json`` and its ``analysis`` section (:func:`edgescale.report.analysis.analyse`),
so they show the numbers ``edgescale pick`` / ``compare`` print. Each function writes one
PNG atomically and returns its path, or None when the run has nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgescale.report.plots import _law, devices_of, legend, plain, plain_log, pyplot, recipe_style, recipes_of, save
from edgescale.report.routes import training_flops
from edgescale.results.analysis_schema import Analysis, CompareRow, Comparison, DegradationLaw, NewModelPick
from edgescale.results.schema import HostLatency, Results


def _decode_ms(row: CompareRow | None) -> float | None:
    """A compare row's decode latency on the compared device (None without a row or a latency)."""
    lat = row and row.device_latency
    return lat and lat.decode_ms


@dataclass(frozen=True)
class _Point:
    """A compare row with its host decode speed-up: measured with its CI, or a p50 ratio (``no_ci``)."""

    row: CompareRow
    size: str
    speedup: float
    low: float
    high: float
    within_noise: bool = False
    slower: bool = False
    no_ci: bool = False


def _speedup_points(cmp: Comparison) -> list[_Point]:
    """Every non-baseline row of the comparison with its host decode speed-up: the measured one
    with its CI, else (results without paired samples) the ratio of the p50s, no interval."""
    out = []
    for table in cmp.sizes:
        base = next((r for r in table.rows if r.recipe == cmp.baseline), None)
        base_ms = _decode_ms(base) if cmp.device == "host" else None
        for r in table.rows:
            if r is base or r.delta_validation_bpb is None:
                continue
            s, ms = r.host_decode_speedup, _decode_ms(r)
            if s is not None:
                out.append(_Point(r, table.size, s.speedup, s.low, s.high, s.within_noise, s.slower))
            elif base_ms and ms:
                out.append(_Point(r, table.size, base_ms / ms, base_ms / ms, base_ms / ms, no_ci=True))
    return out


def plot_compare(results: Results, cmp: Comparison | None, path: Path) -> Path | None:
    """Loss change against the baseline vs measured host decode speed-up (95% CI bars; hollow:
    within noise), and loss change vs file size, one marker per recipe, labelled by size."""
    if cmp is None:
        return None
    base = cmp.baseline
    rows = [(r, t.size) for t in cmp.sizes for r in t.rows if r.recipe != base]
    if not rows:
        return None
    plt = pyplot()
    recipes = recipes_of(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for s in _speedup_points(cmp):
        r, style = s.row, recipe_style(recipes, s.row.recipe)
        err = [[max(0.0, s.speedup - s.low)], [max(0.0, s.high - s.speedup)]]
        ax1.errorbar([s.speedup], [r.delta_validation_bpb], xerr=err, fmt="none", ecolor=style["color"],
                     alpha=0.6, lw=1.2)  # fmt: skip
        face = "none" if s.within_noise else style["color"]
        ax1.scatter([s.speedup], [r.delta_validation_bpb], marker=style["marker"], s=60, zorder=3,
                    facecolors=face, edgecolors=style["color"])  # fmt: skip
        note = " (within noise)" if s.within_noise else " (slower)" if s.slower else ""
        note = " (p50 ratio, no CI)" if s.no_ci else note
        ax1.annotate(plain(s.size) + note, (s.speedup, r.delta_validation_bpb), textcoords="offset points",
                     xytext=(5, 4), fontsize=8)  # fmt: skip
    if not _speedup_points(cmp):
        ax1.text(0.5, 0.5, "no measured speed-ups", transform=ax1.transAxes, ha="center", color="0.5")
    ax1.axvline(1.0, color="0.5", lw=0.8, ls="--")
    ax1.set_xlabel(f"decode speed-up vs {plain(base)}, measured on host (95% CI)")
    ax1.set_title("what a recipe buys in speed and costs in loss (hollow: CI holds 1×, within noise)", fontsize=9)
    for r, size in rows:
        if r.file_ratio is None or r.delta_validation_bpb is None:
            continue
        style = recipe_style(recipes, r.recipe)
        ax2.scatter([r.file_ratio], [r.delta_validation_bpb], s=60, zorder=3, **style)
        ax2.annotate(plain(size), (r.file_ratio, r.delta_validation_bpb), textcoords="offset points",
                     xytext=(5, 4), fontsize=8)  # fmt: skip
    ax2.set_xlabel(f"ONNX file size / {plain(base)}'s")
    ax2.set_title("what a recipe saves in size", fontsize=9)
    for ax in (ax1, ax2):
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_ylabel("Δ validation loss vs baseline, bits/byte")
        ax.grid(True, alpha=0.3)
    _recipe_legend(fig, [r for r in recipes if r != base], recipes)
    fig.suptitle(f"edgescale · {plain(results.study)} · recipes on the same model", fontsize=11)
    return save(fig, path)


def _recipe_legend(fig: Any, shown: list[str], recipes: list[str], extra: list | None = None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", ms=8, label=plain(r), **recipe_style(recipes, r)) for r in shown]
    legend(fig, handles + (extra or []))


def plot_degradation(results: Results, fits: Mapping[str, DegradationLaw], path: Path) -> Path | None:
    """Per recipe: its loss change against the baseline across the family (validation filled,
    test hollow) and the fitted degradation law δ(N, D) with its bootstrap 95% band."""
    fits = {r: f for r, f in fits.items() if f.points}
    if not fits:
        return None
    recipes = recipes_of(results)
    cols = min(3, len(fits))
    rows = math.ceil(len(fits) / cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.9 * rows + 0.6), layout="constrained", squeeze=False)
    for ax in list(axes.flat)[len(fits) :]:
        ax.set_visible(False)
    for ax, (recipe, f) in zip(axes.flat, fits.items(), strict=False):
        style = recipe_style(recipes, recipe)
        curve = [c for c in f.curve or [] if c.delta is not None]
        if curve:
            n = [c.n for c in curve]
            lo = [np.nan if c.low is None else c.low for c in curve]
            hi = [np.nan if c.high is None else c.high for c in curve]
            ax.fill_between(n, lo, hi, color=style["color"], alpha=0.18, lw=0)
            ax.plot(n, [c.delta for c in curve], color=style["color"], lw=1.3)
        pts = f.points
        ax.scatter([p.n for p in pts], [p.delta_bpb for p in pts], s=45, zorder=3, **style)
        test = [(p.n, p.delta_test_bpb) for p in pts if p.delta_test_bpb is not None]
        if test:
            ax.scatter(*zip(*test, strict=True), s=45, zorder=3, marker=style["marker"], facecolors="none",
                       edgecolors="0.3")  # fmt: skip
        for p in pts:
            ax.annotate(plain(p.size), (p.n, p.delta_bpb), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)  # fmt: skip
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("parent's total parameters N")
        ax.set_ylabel(f"Δ loss vs {plain(f.baseline)}, bits/byte")
        ax.set_title(f"{plain(recipe)} · {_law_text(f)}", fontsize=9)
        ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    extra = [
        Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", label="test split"),
        Line2D([], [], color="0.4", lw=1.3, label="fit δ = C·D^γ_D/N^γ_N, band: bootstrap 95%"),
    ]
    _recipe_legend(fig, list(fits), recipes, extra)
    fig.suptitle(f"edgescale · {plain(results.study)} · compression degradation law", fontsize=11)
    return save(fig, path)


def _law_text(f: DegradationLaw) -> str:
    form = f.form
    if form in ("power_law_nd", "power_law_n"):
        text = f"γ_N = {f.gamma_n:.2f}"
        text += f", γ_D = {f.gamma_d:.2f}" if f.gamma_d is not None else " (D not separated)"
        return text + (f", R²(log) {f.r2_log:.2f}" if f.r2_log is not None else "")
    return {"constant_mean": "mean δ (no power law)", "none": "no law: per-size δ only (too few sizes)"}.get(form, form)


def _latency_rows(results: Results) -> dict[str, list[tuple[float, float, float, float, str]]]:
    """Per device: (bytes per decoded token, decode ms, low, high, source) of every variant."""
    out: dict[str, list] = {}
    for v in results.variants:
        b = v.cost.bytes_per_decoded_token
        for dev, lat in v.latency.items():
            source = lat.latency_source
            if isinstance(lat, HostLatency):
                ms, lo, hi = lat.decode_ms_p50, lat.decode_ms_p50, lat.decode_ms_p90
            else:
                ms, lo, hi = lat.decode_ms, lat.decode_ms_low, lat.decode_ms_high
            if b is None or ms is None:
                continue
            out.setdefault(dev, []).append((b, ms, lo if lo is not None else ms, hi if hi is not None else ms, source))
    return out


def plot_latency(results: Results, path: Path) -> Path | None:
    """Decode latency per device against bytes moved per token (host measured: p50 with bars
    to p90; devices predicted: bars over the prediction's interval), and every variant's
    predicted device latency against its measured host latency."""
    rows = _latency_rows(results)
    if not rows:
        return None
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for k, dev in enumerate(devices_of(results)):
        pts = sorted(rows.get(dev, []))
        if not pts:
            continue
        b, ms, lo, hi, src = zip(*pts, strict=True)
        measured = src[0] == "measured"
        err = [np.subtract(ms, lo).clip(0), np.subtract(hi, ms).clip(0)]
        ax1.errorbar(b, ms, yerr=err, fmt="o-" if measured else "s--", color=f"C{k % 10}", ms=5, lw=1, capsize=2,
                     label=f"{plain(dev)} ({'measured' if measured else src[0]})")  # fmt: skip
    plain_log(ax1, "y")
    ax1.set_xscale("log")
    ax1.set_xlabel("bytes moved per decoded token (weights + KV)")
    ax1.set_ylabel("decode latency, ms/token")
    ax1.set_title("host: measured p50 (bar to p90) · devices: predicted (bar: interval)", fontsize=9)
    ax1.legend(fontsize=8)
    ax1.grid(True, which="both", alpha=0.25)
    host = {v.variant_id: getattr(v.latency.get("host"), "decode_ms_p50", None) for v in results.variants}
    drawn = False
    for k, dev in enumerate(devices_of(results)):
        if dev == "host":
            continue
        pairs = [
            (host[v.variant_id], getattr(v.latency.get(dev), "decode_ms", None))
            for v in results.variants
            if host.get(v.variant_id) and getattr(v.latency.get(dev), "decode_ms", None)
        ]
        if pairs:
            ax2.scatter(*zip(*pairs, strict=True), color=f"C{k % 10}", s=30, label=plain(dev))
            drawn = True
    if drawn:
        lims = [min(ax2.get_xlim()[0], ax2.get_ylim()[0]), max(ax2.get_xlim()[1], ax2.get_ylim()[1])]
        ax2.plot(lims, lims, color="0.5", lw=0.8, ls="--", label="device = host")
        plain_log(ax2)
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no device predictions beside the host measurement", transform=ax2.transAxes,
                 ha="center", color="0.5")  # fmt: skip
    ax2.set_xlabel("host decode ms/token, measured p50")
    ax2.set_ylabel("device decode ms/token, predicted")
    ax2.set_title("each variant: predicted on a device vs measured here", fontsize=9)
    ax2.grid(True, which="both", alpha=0.25)
    fig.suptitle(f"edgescale · {plain(results.study)} · latency, measured vs predicted", fontsize=11)
    return save(fig, path)


def plot_plan(results: Results, analysis: Analysis, path: Path) -> Path | None:
    """The training side: every ladder size at its (N, D) with its compute, iso-compute lines,
    the fitted law's compute-optimal allocation and the plans for the target (the scaling
    fit's and each device's pick that had to plan a new model); beside it, the training
    compute behind every variant (own pre-training vs the total with teacher and recovery)."""
    sizes = [s for s in results.sizes if s.params_total and s.train_tokens]
    if not sizes:
        return None
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.0), layout="constrained")
    plans = _plans(results, analysis)
    ns = [s.params_total for s in sizes] + [p[1] for p in plans]
    n_grid = np.geomspace(min(ns) / 2, max(ns) * 2, 50)
    for s in sizes:
        c = 6 * s.params_total * s.train_tokens
        ax1.plot(n_grid, c / (6 * n_grid), color="0.85", lw=0.8, zorder=1)
        marker = "^" if s.distilled_from else "o"
        ax1.scatter([s.params_total], [s.train_tokens], s=50, marker=marker, color="C0", zorder=3)
        ax1.annotate(f"{plain(s.size)}: C={c:.2g}", (s.params_total, s.train_tokens),
                     textcoords="offset points", xytext=(5, 4), fontsize=8)  # fmt: skip
    if results.scaling.status == "fitted":
        law = _law(results)
        cs = np.geomspace(1e6, 1e26, 121)
        opt = np.array([law.compute_optimal(c) for c in cs])
        keep = (opt[:, 0] >= n_grid[0]) & (opt[:, 0] <= n_grid[-1])
        if keep.any():
            ax1.plot(opt[keep, 0], opt[keep, 1], color="C2", lw=1.2, label="compute-optimal N(C), fitted law")
    grouped: dict[tuple[float, float], list[str]] = {}
    for label, n, d in plans:  # devices that plan the same model share one star
        grouped.setdefault((float(f"{n:.4g}"), float(f"{d:.4g}")), []).append(label)
    for (n, d), labels in grouped.items():
        ax1.scatter([n], [d], marker="*", s=170, color="tab:red", zorder=4)
        ax1.annotate(plain("\n".join(labels)), (n, d), textcoords="offset points", xytext=(8, -4), fontsize=8,
                     color="tab:red", va="top")  # fmt: skip
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("total parameters N")
    ax1.set_ylabel("training tokens D")
    ax1.set_title("the plan: sizes trained (●, ▲ distilled), grey: iso-compute C = 6ND, ★: plans for the target",
                  fontsize=9)  # fmt: skip
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=8, loc="lower left")
    ax1.grid(True, which="major", alpha=0.3)
    table = {s.size: s for s in results.sizes}
    variants = [v for v in results.variants if v.size in table and v.params_total]
    flops = [(v.variant_id, training_flops(v, table)) for v in variants]
    y = np.arange(len(flops))
    ax2.barh(y, [f["total"] for _, f in flops], color="C1", alpha=0.45, label="total: + teacher, + recovery")
    ax2.barh(y, [f["pretrain"] for _, f in flops], color="C0", height=0.5, label="own pre-training, 6·N·D")
    ax2.set_yticks(y, [plain(vid) for vid, _ in flops], fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xscale("log")
    ax2.set_xlabel("training FLOPs behind the variant")
    ax2.set_title("training compute per variant", fontsize=9)
    ax2.legend(fontsize=8)
    fig.suptitle(f"edgescale · {plain(results.study)} · training plan and its cost", fontsize=11)
    return save(fig, path)


def _plans(results: Results, analysis: Analysis) -> list[tuple[str, float, float]]:
    """(label, N, D) of the scaling fit's plan for the target and each pick that plans a model."""
    out = []
    plan = results.scaling.plan_for_target
    if plan and plan.status == "ok" and plan.n_params:
        target = "?" if plan.loss_target_bpb is None else plan.loss_target_bpb
        out.append((f"fit's plan for {target} bpb", plan.n_params, plan.n_tokens))
    for dev, p in (analysis.picks or {}).items():
        best = p.best if isinstance(p, NewModelPick) and p.status == "plan" else None
        if best is not None and best.plan is not None and best.plan.n_params:
            out.append((f"{dev}: then {best.recipe}", best.plan.n_params, best.plan.n_tokens))
    return out
