"""How long an approach-3 fit takes, and whether scoring the grid first loses the optimum.

    .venv/bin/python benchmarks/fit_speed.py [--points 240] [--bootstrap 200]

Hoffmann et al. run L-BFGS from every one of 4,500 grid starts. edgescale scores the
whole grid in one vectorised pass and runs L-BFGS from the best 24 starts, then
warm-starts every bootstrap refit from the point estimate. This script times both on
the same synthetic data (drawn from the epoch2024 constants with 1% noise) and prints
the objective each reaches.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from edgescale.scaling.fit import _grid_scores, _lbfgs, fit_chinchilla
from edgescale.scaling.laws import EPOCH2024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=240)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), args.points))
    d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), args.points))
    loss = EPOCH2024.loss(n, d) * np.exp(rng.normal(0, 0.01, args.points))
    logs = (np.log(n), np.log(d), np.log(loss))

    t = time.perf_counter()
    starts, _ = _grid_scores(*logs, 1e-3)
    full = min((_lbfgs(s, *logs, 1e-3) for s in starts), key=lambda o: o[1])
    t_full = time.perf_counter() - t

    t = time.perf_counter()
    fast = fit_chinchilla(n, d, loss, n_boot=1)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    boot = fit_chinchilla(n, d, loss, n_boot=args.bootstrap)
    t_boot = time.perf_counter() - t

    table = Table(title=f"approach-3 fit, {args.points} points (synthetic, epoch2024 constants, 1% noise)")
    for col in ("procedure", "L-BFGS runs", "seconds", "objective", "E", "alpha", "beta"):
        table.add_column(col, justify="left" if col == "procedure" else "right")
    a, b, e, al, be = full[0]
    table.add_row(
        "every grid start (Hoffmann)",
        f"{len(starts):,}",
        f"{t_full:.2f}",
        f"{full[1]:.10f}",
        f"{np.exp(e):.4f}",
        f"{al:.4f}",
        f"{be:.4f}",
    )
    for name, f, secs, runs in (
        ("scored grid, best 24 starts", fast, t_fast, "24 + 1"),
        (f"+ {args.bootstrap} warm bootstraps", boot, t_boot, f"24 + {args.bootstrap}"),
    ):
        table.add_row(
            name,
            runs,
            f"{secs:.2f}",
            f"{f.objective:.10f}",
            f"{f.law.E:.4f}",
            f"{f.law.alpha:.4f}",
            f"{f.law.beta:.4f}",
        )
    Console(width=140).print(table)
    print(f"speed-up of the point estimate: {t_full / t_fast:.0f}x (same run, same data)")


if __name__ == "__main__":
    main()
