"""The training side of a run: fit the law to the ladder's cooled checkpoints and plan the target.

Losses are in bits per byte in the report; the fit runs in nats per token (byte tokens:
nats/token = bits/byte · ln 2) with N counted as *total* parameters, the Chinchilla
convention — embeddings are a large share of these small byte-level models. When the full form
is not identified the reduced form is fitted too (:mod:`edgescale.scaling.identify`): ``law`` is
the full form, ``reduced`` the reduced one, and the plan comes from whichever is identified (its
``form`` says which), or is ``unidentified``. Plans are capped by the train split's unique tokens
under the epoch rule of :mod:`edgescale.scaling.plan`.
"""

from __future__ import annotations

import math

import numpy as np

from edgescale.scaling.fit import ChinchillaFit
from edgescale.scaling.identify import data_to_identify, fit_identified
from edgescale.scaling.plan import plan_for_loss

LN2 = math.log(2)


def cooled_points(sizes: list[dict]) -> list[dict]:
    return [
        {"size": s["size"], "N": s["params_total"], "D": c["tokens"], "bits_per_byte": c["val_bpb"]}
        for s in sizes
        for c in s.get("curve", [])
        # in_fit where recorded (older runs: cooled), the rule edgescale.scaling.points.from_sizes reads back
        if (c["in_fit"] if c.get("in_fit") is not None else c.get("cooled"))
    ]


def fit_study(
    sizes: list[dict],
    loss_target_bpb: float | None,
    n_boot: int = 200,
    seed: int = 0,
    pretrained: list[dict] = (),
    train_tokens: int | None = None,
) -> dict:
    """Fit L(N, D) to the cooled checkpoints and the ``pretrained`` candidates' points (known
    training tokens: ``{size, N, D, bits_per_byte}``); plan the cheapest model reaching the target
    with at most the ``train_tokens`` unique tokens that exist (None: unknown)."""
    cooled = cooled_points(sizes)
    pts = cooled + list(pretrained)
    out: dict = {
        "points": pts,
        "n_convention": "total",
        "unit": "bits_per_byte",
        "train_tokens_available": train_tokens,
    }
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
    found = fit_identified(
        n, d, loss, n_boot=n_boot, seed=seed, n_convention="total", groups=groups, unit=(1 / LN2, "bpb")
    )
    out |= {"status": "fitted", "law": _law_in_bpb(found.full), "bootstrap": _draws_in_bpb(found.full.boots)}
    if found.reduced is not None:
        out["reduced"] = _law_in_bpb(found.reduced)
    if loss_target_bpb is not None:
        if found.used is None:
            out["plan_for_target"] = unidentified_plan(n, d, found.weak, loss_target_bpb, unique_tokens=train_tokens)
            return out
        fit = found.used
        law = fit.law.with_(name=f"fit (this run; {fit.form})", ci=fit.ci, form=fit.form)
        plan = plan_for_loss(law, loss_target_bpb * LN2, unique_tokens=train_tokens).to_dict()
        if plan["status"] in ("ok", "data_limited"):
            plan["predicted_loss_bpb"] = plan["predicted_loss"] / LN2
        plan["reliable"] = True
        plan["loss_target_bpb"] = loss_target_bpb
        out["plan_for_target"] = plan
    return out


def _law_in_bpb(fit: ChinchillaFit) -> dict:
    """The fit's ``to_dict`` with E, A, B and their intervals in bits per byte (L scales linearly:
    E, A and B carry the unit)."""
    f = fit.to_dict()
    in_bpb = {k: f[k] / LN2 for k in ("E", "A", "B")}
    ci = {
        k: [None if v is None else v / LN2 for v in f["ci"][k]] if k in ("E", "A", "B") else f["ci"][k] for k in f["ci"]
    }
    return {**f, **in_bpb, "ci": ci, "unit": "bits_per_byte"}


def unidentified_plan(
    n, d, weak: list[str], loss_target_bpb: float, law: str = "fit (this run)", unique_tokens: float | None = None
) -> dict:
    """No numbers from a law the data cannot pin (its plan would be an artefact of the optimiser):
    ``status: unidentified``, with the sizes and token budgets that would identify it."""
    add = data_to_identify(n, d, weak, unique_tokens)
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
