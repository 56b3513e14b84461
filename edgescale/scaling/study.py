"""The training side of a run: fit the law to the ladder's cooled checkpoints and plan the target.

Losses are in bits per byte in the report; the fit runs in nats per token (byte tokens:
nats/token = bits/byte · ln 2) with N counted as *total* parameters, the Chinchilla
convention — embeddings are a large share of these small byte-level models.
"""

from __future__ import annotations

import math

import numpy as np

from edgescale.scaling.fit import fit_chinchilla
from edgescale.scaling.plan import data_to_identify, plan_for_loss

LN2 = math.log(2)


def cooled_points(sizes: list[dict]) -> list[dict]:
    return [
        {"size": s["size"], "N": s["params_total"], "D": c["tokens"], "bits_per_byte": c["val_bpb"]}
        for s in sizes
        for c in s.get("curve", [])
        if c.get("cooled")
    ]


def fit_study(
    sizes: list[dict], loss_target_bpb: float | None, n_boot: int = 200, seed: int = 0, pretrained: list[dict] = ()
) -> dict:
    """Fit L(N, D) to the cooled checkpoints and the ``pretrained`` candidates' points (known
    training tokens: ``{size, N, D, bits_per_byte}``); plan the cheapest model reaching the target."""
    cooled = cooled_points(sizes)
    pts = cooled + list(pretrained)
    out: dict = {"points": pts, "n_convention": "total", "unit": "bits_per_byte"}
    if len(pts) < 5:
        named = f" ({', '.join(p['size'] for p in pretrained)})" if pretrained else ""
        out["status"] = "not_fitted"
        out["reason"] = (
            f"{len(pts)} points: {len(cooled)} cooled checkpoints and {len(pretrained)} pretrained candidates "
            f"with known train_tokens{named}; a fit needs >= 5 on an (N, D) grid: set training.schedule: wsd "
            "with several cooled_fractions, or give more candidates their train_tokens"
        )
        return out
    n, d = np.array([p["N"] for p in pts], float), np.array([p["D"] for p in pts], float)
    loss = np.array([p["bits_per_byte"] for p in pts]) * LN2
    # one size's cooled checkpoints share its run: the bootstrap resamples whole runs
    groups = [p["size"] for p in pts]
    fit = fit_chinchilla(n, d, loss, n_boot=n_boot, seed=seed, n_convention="total", groups=groups)
    f = fit.to_dict()
    in_bpb = {k: f[k] / LN2 for k in ("E", "A", "B")}  # L scales linearly: E, A, B carry the unit
    ci = {
        k: [None if v is None else v / LN2 for v in f["ci"][k]] if k in ("E", "A", "B") else f["ci"][k] for k in f["ci"]
    }
    out |= {
        "status": "fitted",
        "law": {**f, **in_bpb, "ci": ci, "unit": "bits_per_byte"},
        "bootstrap": _draws_in_bpb(fit.boots),
    }
    if loss_target_bpb is not None:
        weak = sorted(k for k in ("E", "alpha", "beta") if k in fit.unidentified)
        if weak:
            out["plan_for_target"] = unidentified_plan(n, d, weak, loss_target_bpb)
            return out
        law = fit.law.with_(name="fit (this run)", ci=fit.ci)
        plan = plan_for_loss(law, loss_target_bpb * LN2).to_dict()
        if plan["status"] == "ok":
            plan["predicted_loss_bpb"] = plan["predicted_loss"] / LN2
        plan["reliable"] = True
        plan["loss_target_bpb"] = loss_target_bpb
        out["plan_for_target"] = plan
    return out


def unidentified_plan(n, d, weak: list[str], loss_target_bpb: float, law: str = "fit (this run)") -> dict:
    """No numbers from a law the data cannot pin (its plan would be an artefact of the optimiser):
    ``status: unidentified``, with the sizes and token budgets that would identify it."""
    add = data_to_identify(n, d, weak)
    return {
        "status": "unidentified",
        "objective": "target_loss",
        "law": law,
        "reason": f"no plan: {add['summary']}",
        "reliable": False,
        "loss_target_bpb": loss_target_bpb,
        "unidentified": weak,
        "identify_with": add,
    }


def _draws_in_bpb(boots: np.ndarray) -> dict:
    """The fit's bootstrap refits as rows of (E, A, B, alpha, beta) in bits per byte, for the
    report's confidence bands; refits that ran off to an unbounded law were dropped by the fit,
    which counts them (``law.boot_dropped``)."""
    with np.errstate(over="ignore"):
        rows = np.column_stack([np.exp(boots[:, [2, 0, 1]]) / LN2, boots[:, 3:5]])
    rows = rows[np.isfinite(rows).all(axis=1)]
    return {
        "columns": ["E", "A", "B", "alpha", "beta"],
        "unit": "bits_per_byte",
        "rows": [[float(f"{x:.6g}") for x in r] for r in rows],
    }
