"""How long an approach-3 fit takes: one scipy BFGS per start against every start in one batch.

    .venv/bin/python benchmarks/fit_speed.py [--bootstrap 200] [--repeats 3]

A fit solves 24 point-fit starts plus 4 starts for each bootstrap resample, per form.
Until issue 17 each was one ``scipy.optimize.minimize(method="BFGS")`` call (the point fit
used L-BFGS-B); now every start of every resample steps together in numpy
(:mod:`edgescale.scaling.batch_bfgs`). This script runs both on the same problems, the
same resamples and the same starts, interleaved ``--repeats`` times, on two data sets:

- ``default-like``: 24 points of 4 sizes x 3 budgets x 2 seeds shaped like the default
  study's ladder (12.8k-448k non-embedding parameters), from a law with a floor, 1% noise,
  resampled by run (the cluster bootstrap the study uses);
- ``epoch2024``: 240 points drawn from Besiroglu et al.'s constants with 1% noise.

It prints the median seconds of each, their ratio, and what each reached: the best
point-fit objective and the bootstrap 95% intervals of E, α and β.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

from edgescale.bench.measure import machine_info
from edgescale.scaling.fit import DELTA, _clusters, _grid, _refits, _usable, objective
from edgescale.scaling.laws import EPOCH2024, Chinchilla

TOP_POINT, TOP_BOOT = 24, 4


def _data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list | None]:
    rng = np.random.default_rng(0)
    if name == "epoch2024":
        n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 240))
        d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), 240))
        return n, d, EPOCH2024.loss(n, d) * np.exp(rng.normal(0, 0.01, 240)), None
    law = Chinchilla(E=1.2, A=60.0, B=400.0, alpha=0.3, beta=0.35)
    sizes = [2.5e4, 9e4, 2.2e5, 4.8e5]
    n = np.repeat(sizes, 6)
    d = np.array([f * max(1e6, min(2e6, 20 * s)) for s in sizes for f in (0.25, 0.5, 1.0) * 2])
    groups = [f"s{i}-{k}" for i in range(4) for k in (0, 0, 0, 1, 1, 1)]
    return n, d, law.loss(n, d) * np.exp(rng.normal(0, 0.01, n.size)), groups


def _scipy_starts(starts, log_n, log_d, log_l):
    """The old path: one scipy BFGS per start; (thetas, objectives)."""
    res = [minimize(objective, s, args=(log_n, log_d, log_l, DELTA), jac=True, method="BFGS") for s in starts]
    return np.array([r.x for r in res]), np.array([r.fun for r in res])


def _scipy_fit(log_n, log_d, log_l, weights):
    """Point fit and bootstrap by scipy, from the same starts the batch uses."""
    starts, h = _grid(log_n, log_d, log_l, DELTA)
    point = _scipy_starts(starts[np.argsort(h.sum(axis=1))[:TOP_POINT]], log_n, log_d, log_l)
    boots = []
    for w in weights:
        rows = np.repeat(np.arange(log_n.size), w.astype(int))
        x, f = _scipy_starts(starts[np.argsort(h @ w)[:TOP_BOOT]], log_n[rows], log_d[rows], log_l[rows])
        boots.append(x[f.argmin()])
    return point, np.array(boots)


def _batch_fit(log_n, log_d, log_l, weights):
    x, f = _refits(np.ones((1, log_n.size)), log_n, log_d, log_l, DELTA, TOP_POINT, False, None)
    xb, fb = _refits(weights, log_n, log_d, log_l, DELTA, TOP_BOOT, False, None)
    return (x[0], f[0]), xb[np.arange(len(xb)), fb.argmin(axis=1)]


def _weights(log_n, groups, n_boot: int) -> np.ndarray:
    """The resamples :func:`edgescale.scaling.fit.bootstrap` draws, as point weights."""
    rng = np.random.default_rng(0)
    members = _clusters(groups, log_n.size)
    out = np.zeros((n_boot, log_n.size))
    for i in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
        out[i] = np.bincount(idx, minlength=log_n.size)
    return out


def _ci(boots: np.ndarray) -> str:
    kept = _usable(boots)
    e, al, be = np.exp(kept[:, 2]), kept[:, 3], kept[:, 4]
    shown = (("E", e), ("α", al), ("β", be))
    return "  ".join(f"{k} [{np.quantile(v, 0.025):.3f}, {np.quantile(v, 0.975):.3f}]" for k, v in shown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    m = machine_info(1)
    print(f"host: {m.get('cpu_model', '?')} ({' '.join(m.get('isa') or ['?'])}), {m.get('logical_cpus', '?')} CPUs")
    print(f"one form (full), {TOP_POINT} point-fit starts + {TOP_BOOT} starts x {args.bootstrap} resamples\n")
    print("| data | path | problems | median s | ratio | best objective | bootstrap 95% intervals |")
    print("|---|---|---|---|---|---|---|")
    for name in ("default-like", "epoch2024"):
        n, d, loss, groups = _data(name)
        logs = (np.log(n), np.log(d), np.log(loss))
        weights = _weights(logs[0], groups, args.bootstrap)
        times: dict[str, list[float]] = {"scipy": [], "batch": []}
        out = {}
        for _ in range(args.repeats):  # interleaved: both paths see the same machine state
            for path, fn in (("scipy", _scipy_fit), ("batch", _batch_fit)):
                t = time.perf_counter()
                out[path] = fn(*logs, weights)
                times[path].append(time.perf_counter() - t)
        problems = TOP_POINT + TOP_BOOT * args.bootstrap
        base = float(np.median(times["scipy"]))
        for path in ("scipy", "batch"):
            (_, f), boots = out[path]
            med = float(np.median(times[path]))
            print(f"| {name} | {path} | {problems} | {med:.2f} | {base / med:.1f}x | {f.min():.10g} | {_ci(boots)} |")


if __name__ == "__main__":
    main()
