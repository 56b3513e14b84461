"""The degradation grid: every post-training recipe's loss change at several D/N per size and several seeds.

A degradation law δ(N, D) (:mod:`edgescale.report.degradation`, after Kumar et al. 2024,
arXiv:2411.04330) can separate the data term from the size term only with more than one
D/N per size, and judge either against noise only with replicates. The ladder already
leaves both: the warmup-stable-decay trainer saves its non-final cooled branches
(:mod:`edgescale.train.trainer`), and ``training.seeds`` trains extra seeds of every
ladder size. Here each of those models (and each extra seed's final model) goes through
the study's baseline chain and every other recipe that does not retrain (no recovery step:
see :func:`retrains`) by the same chain runner as the
variants (:meth:`Pipeline.run_chain`, content-keyed steps, so a rerun reuses them) and is
scored on validation by the same :meth:`Pipeline.loss` (per-window sidecars), giving a
paired δ with its standard error. The exported run's final model is not redone: its point
reuses the variants' own losses.

A point that fails (a missing branch file, a step, the scorer) is kept with its stage and
reason and no δ; the others go on. Students and pretrained candidates have no branches
and yield nothing. ``evaluation.degradation_grid: false`` turns the grid off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgescale.compress.registry import RECOVER_OP, Chain
from edgescale.models.backend import SizePlan
from edgescale.pipeline import Pipeline, VariantFailure, attempt
from edgescale.results import nll
from edgescale.results.nll import Z95

SPLIT = "validation"


@dataclass(frozen=True)
class GridModel:
    """One trained model of a ladder size: a cooled branch or a seed's final model (``start`` None: its
    branch file is gone, ``why`` says so)."""

    size: str
    seed: int
    tokens: int
    fraction: float
    start: dict | None  # {checkpoint, sha256, tokens}: what Pipeline.run_chain starts from
    reused: bool = False  # the exported run's final model: its variants are already scored
    why: str = ""


def baseline_name(chains: list[Chain]) -> str:
    """The recipe losses are measured against (as in results.assemble): fp32 if the study has it, else the first."""
    names = [c.name for c in chains]
    return "fp32" if "fp32" in names else names[0]


def retrains(chain: Chain) -> bool:
    """A recipe with a recovery step: its loss is judged against its scratch twin, not in the grid,
    which measures what compression at a fixed training run costs (the degradation law's δ(N, D));
    recovering every branch of every seed would also retrain the grid's 3 × seeds models per size."""
    return any(s.op == RECOVER_OP for s in chain.steps)


def grid_models(plan: SizePlan, runs: list[dict], exported_seed: int) -> list[GridModel]:
    """Every cooled branch of every seed's run of ``plan`` (final models included), in (seed, tokens) order."""
    out = []
    for run in runs:
        seed, final = run.get("seed", exported_seed), run["tokens"]
        saved = {b["tokens"]: b for b in run.get("branches", [])}
        for c in run.get("curve", []):
            if not c.get("cooled") or c["tokens"] >= final:
                continue
            b = saved.get(c["tokens"])
            start = {"checkpoint": b["checkpoint"], "sha256": b["sha256"], "tokens": b["tokens"]} if b else None
            why = "" if b else "branch checkpoint not saved (taken before a resume, or by an older run); not retrained"
            out.append(GridModel(plan.name, seed, c["tokens"], c["step"] / run["steps"], start, why=why))
        start = {k: run[k] for k in ("checkpoint", "sha256", "tokens")}
        out.append(GridModel(plan.name, seed, final, 1.0, start, reused=seed == exported_seed))
    return out


def _failure(vid: str, stage: str, reason: str, error_type: str = "MissingBranch") -> VariantFailure:
    return VariantFailure(vid, stage, error_type, reason)


class _Scorer:
    """Chains and validation losses of grid models, one baseline per model (computed once)."""

    def __init__(self, pipe: Pipeline, variants: dict[str, dict], losses: dict) -> None:
        self.pipe, self.variants, self.losses = pipe, variants, losses

    def reused(self, m: GridModel, recipe: str) -> dict | VariantFailure:
        vid = f"{m.size}/{recipe}"
        got = self.losses.get(vid)
        if got is None or isinstance(got, VariantFailure) or vid not in self.variants:
            reason = got.reason if isinstance(got, VariantFailure) else "the variant has no loss"
            return _failure(vid, "variant", f"{vid} failed: {reason}", "VariantFailed")
        return {**got[SPLIT], "artifact": self.variants[vid]["artifact"]}

    def scored(self, plan: SizePlan, chain: Chain, m: GridModel) -> dict | VariantFailure:
        if m.reused:
            return self.reused(m, chain.name)
        vid = f"grid/{m.size}/seed{m.seed}/{m.tokens}/{chain.name}"
        if m.start is None:
            return _failure(vid, "branch", m.why)
        if not self.pipe.rd.verify(m.start["checkpoint"], m.start["sha256"]):
            return _failure(vid, "branch", f"branch checkpoint {m.start['checkpoint']} is missing or corrupt")
        v = attempt(vid, "chain", self.pipe.run_chain, plan, chain, m.start)
        if isinstance(v, VariantFailure):
            return v
        loss = attempt(vid, "loss", self.pipe.losses, vid, v, (SPLIT,), m.size)
        return loss if isinstance(loss, VariantFailure) else {**loss[SPLIT], "artifact": v["artifact"]}


def _loss(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("bits_per_byte", "se_bpb", "nll_file", "artifact")}


def _delta(base: dict, var: dict, root) -> dict:
    """δ = variant − base with its error: paired over the windows both sidecars hold, else unpaired."""
    delta = var["bits_per_byte"] - base["bits_per_byte"]
    a, b = nll.load(root, var.get("nll_file")), nll.load(root, base.get("nll_file"))
    c = nll.paired_delta(a, b) if a is not None and b is not None else None
    if c is None and var.get("se_bpb") is not None and base.get("se_bpb") is not None:
        c = nll.unpaired([(1.0, var["bits_per_byte"], var["se_bpb"]), (-1.0, base["bits_per_byte"], base["se_bpb"])])
    if c is None or not math.isfinite(c.se_bpb):
        return {"delta_bpb": delta}
    return {"delta_bpb": delta, "se_bpb": c.se_bpb, "se_paired": c.paired, "within_noise": abs(delta) < Z95 * c.se_bpb}


def _point(m: GridModel, plan: SizePlan, recipe: str, base_name: str, base, var, root) -> dict:
    out = {"size": m.size, "seed": m.seed, "tokens": m.tokens, "fraction": round(m.fraction, 6)}
    out |= {"params_total": plan.acct.params_total, "recipe": recipe, "baseline": base_name}
    for failed, stage in ((base, "baseline {}"), (var, "{}")):
        if isinstance(failed, VariantFailure):
            why = {"failed_stage": stage.format(failed.stage), "error_type": failed.error_type, "reason": failed.reason}
            return out | {"status": "failed", **why}
    out |= {"base": _loss(base), "variant": _loss(var), **_delta(base, var, root)}
    return out | ({"reused": True} if m.reused else {})


def degradation_grid(pipe: Pipeline, trained: dict[str, dict], variants: dict[str, dict], losses: dict) -> list[dict]:
    """The grid's points (``results.json``'s ``degradation_grid``), failed ones with their reason."""
    if not pipe.study.evaluation.degradation_grid or not pipe.chains:
        return []
    ladder = set(pipe.study.ladder.names()) if pipe.study.ladder else set()
    base_name = baseline_name(pipe.chains)
    base_chain = next(c for c in pipe.chains if c.name == base_name)
    recipes = [c for c in pipe.chains if c.name != base_name and not retrains(c)]
    scorer, out = _Scorer(pipe, variants, losses), []
    for plan in pipe.candidates:
        if plan.name not in ladder or plan.teacher or not recipes or plan.name not in trained:
            continue
        runs = [trained[plan.name], *pipe.replicates.get(plan.name, [])]
        for m in grid_models(plan, runs, pipe.study.seed):
            base = scorer.scored(plan, base_chain, m)
            for chain in recipes:
                var = scorer.scored(plan, chain, m) if not isinstance(base, VariantFailure) else base
                out.append(_point(m, plan, chain.name, base_name, base, var, pipe.rd.root))
    failed = [p for p in out if p.get("status") == "failed"]
    if failed:
        pipe.rep.warn(f"degradation grid: {len(failed)} of {len(out)} points failed (see results.json)")
    return out
