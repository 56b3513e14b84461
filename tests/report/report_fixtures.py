"""A complete hand-made ``results.json`` for the report tests: every section has something to
draw (curves, a fitted law with its points, measured speed-ups, a predicted device)."""

from __future__ import annotations

import handmade_results as hm


def full_results(target: float | None = 2.7, recipes: dict[str, float] | None = None) -> dict:
    """Three sizes × fp32 + two recipes; the first recipe's smallest speed-up is within noise."""
    recipes = recipes or {"int8_dynamic": 0.5, "int4_weight_only": 2.0}
    variants = hm.ladder(recipes)
    first = next(iter(recipes))
    for v in variants:
        if v["recipe"] != "fp32":
            noisy = v["recipe"] == first and v["size"] == "s0"
            v["latency"]["host"]["decode_speedup_vs_fp32"] = {
                "speedup": 1.05 if noisy else 1.8,
                "low": 0.97 if noisy else 1.6,
                "high": 1.12 if noisy else 2.0,
                "within_noise": noisy,
                "slower": False,
            }
    res = hm.results(variants, target=target)
    points = []
    for s in res["sizes"]:
        n, d = s["params_total"], s["train_tokens"]
        curve = [
            {"step": k, "tokens": int(d * k / 4), "train_bpb": hm.law_loss(n, d * k / 4) + 0.02,
             "val_bpb": hm.law_loss(n, d * k / 4) + 0.05, "cooled": False}
            for k in (1, 2, 3)
        ]  # fmt: skip
        for frac in (0.25, 0.5, 1.0):
            curve.append({"tokens": int(d * frac), "val_bpb": hm.law_loss(n, d * frac), "cooled": True})
            points.append({"size": s["size"], "N": n, "D": int(d * frac), "bits_per_byte": hm.law_loss(n, d * frac)})
        s.update(curve=curve, n_layer=2, n_head=2, n_embd=16, params_non_embedding=n // 2, tokens_rule="min_tokens")
    if res["scaling"]["status"] == "fitted":
        res["scaling"]["points"] = points
        res["scaling"]["law"] |= {"n_points": len(points), "rmse_log": 0.001, "r2_log": 0.999, "warnings": []}
        res["scaling"]["bootstrap"] = _draws(res["scaling"]["law"])
    return res


def _draws(law: dict) -> dict:
    """Stored bootstrap refits around the law, as a run writes them, so the scaling figure draws its
    band without refitting (the refit of a run that stored none: tests/scaling/test_study_fit.py)."""
    cols = ["E", "A", "B", "alpha", "beta"]
    rows = [[law[c] * (1 + k * (0.01 if c in ("alpha", "beta") else 0.05)) for c in cols] for k in range(-3, 4)]
    return {"columns": cols, "unit": "bits_per_byte", "rows": rows}
