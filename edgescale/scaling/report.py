"""Human-readable and plotted views of fits and plans (the CLI's non-JSON output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgescale.atomic import atomic_path
from edgescale.scaling.fit import ChinchillaFit
from edgescale.scaling.points import Points


def plot_fit(fit: ChinchillaFit, pts: Points, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    law = fit.law
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    sc = ax1.scatter(pts.d, pts.loss, c=np.log10(pts.n), cmap="viridis", s=18)
    for n in np.unique(np.quantile(pts.n, [0.0, 0.5, 1.0])):
        ds = np.geomspace(pts.d.min(), pts.d.max(), 100)
        ax1.plot(
            ds,
            law.loss(n, ds),
            color=plt.cm.viridis((np.log10(n) - np.log10(pts.n).min()) / max(1e-9, np.ptp(np.log10(pts.n)))),
            lw=1,
        )
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("tokens D")
    ax1.set_ylabel(f"loss ({pts.loss_unit})")
    fig.colorbar(sc, ax=ax1, label="log10 N")
    ci = fit.ci
    ax1.set_title(
        f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}\n"
        f"E [{ci['E'][0]:.3g}, {ci['E'][1]:.3g}]  α [{ci['alpha'][0]:.3f}, {ci['alpha'][1]:.3f}]  "
        f"β [{ci['beta'][0]:.3f}, {ci['beta'][1]:.3f}]",
        fontsize=9,
    )
    pred = law.loss(pts.n, pts.d)
    ax2.scatter(pts.loss, pred, s=14)
    lim = [min(pts.loss.min(), pred.min()), max(pts.loss.max(), pred.max())]
    ax2.plot(lim, lim, color="0.5", lw=1, ls="--")
    ax2.set_xlabel("observed loss")
    ax2.set_ylabel("fitted loss")
    ax2.set_title(f"{fit.n_points} points · RMSE(log) {fit.rmse_log:.4f} · R²(log) {fit.r2_log:.3f}", fontsize=9)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return Path(path)
