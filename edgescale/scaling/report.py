"""Plots of a scaling fit: the data with the fitted law, and fitted against observed loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgescale.atomic import atomic_path
from edgescale.scaling.fit import ChinchillaFit
from edgescale.scaling.laws import Chinchilla
from edgescale.scaling.points import Points


def plot_fit(fit: ChinchillaFit, pts: Points, path: Path) -> Path:
    return plot_law(
        pts.n,
        pts.d,
        pts.loss,
        fit.law,
        fit.ci,
        pts.loss_unit,
        path,
        subtitle=f"{fit.n_points} points · RMSE(log) {fit.rmse_log:.4f} · R²(log) {fit.r2_log:.3f}",
    )


def plot_law(n, d, loss, law: Chinchilla, ci: dict, unit: str, path: Path, subtitle: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    logn = np.log10(n)
    span = max(1e-9, float(np.ptp(logn)))
    sc = ax1.scatter(d, loss, c=logn, cmap="viridis", s=22, zorder=3)
    ds = np.geomspace(d.min() / 1.5, d.max() * 1.5, 100)
    for nn in np.unique(n) if np.unique(n).size <= 8 else np.quantile(n, [0, 0.5, 1]):
        ax1.plot(ds, law.loss(nn, ds), lw=1, color=plt.cm.viridis((np.log10(nn) - logn.min()) / span))
    ax1.axhline(law.E, color="0.5", lw=0.8, ls=":", label=f"E = {law.E:.3g}")
    ax1.set_xscale("log")
    ax1.set_xlabel("training tokens D")
    ax1.set_ylabel(f"loss ({unit})")
    ax1.legend(fontsize=8)
    fig.colorbar(sc, ax=ax1, label="log10 N")

    def iv(k: str) -> str:
        lo, hi = (float("inf") if x is None else x for x in ci.get(k, (float("nan"), float("nan"))))
        return f"[{lo:.3g}, {hi:.3g}]"

    ax1.set_title(
        f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}\n"
        f"95%: E {iv('E')}  α {iv('alpha')}  β {iv('beta')}",
        fontsize=9,
    )
    pred = law.loss(n, d)
    ax2.scatter(loss, pred, s=16)
    lim = [min(loss.min(), pred.min()), max(loss.max(), pred.max())]
    ax2.plot(lim, lim, color="0.5", lw=1, ls="--")
    ax2.set_xlabel("observed loss")
    ax2.set_ylabel("fitted loss")
    ax2.set_title(subtitle, fontsize=9)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return Path(path)
