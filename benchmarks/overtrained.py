"""Overtrained parents: does compression win where real edge models live? (issue 20, part 2)

    nice -n 10 .venv/bin/python benchmarks/overtrained.py [--seeds 0 1] [--out runs/bench-overtrained]

Runs studies/overtrained.yaml (3 parents at 200 tokens per parameter, N = total parameters) once
per seed, and the same ladder at 20 tokens per parameter (fp32, int8, int4 only) once per seed,
each through the normal pipeline (training, compression, ONNX export, held-out loss through
onnxruntime; all cached in the run directories, so a rerun only re-reads). Then, per size:

- pruned + recovered (heads + FFN, and depth; ≤ 3% of the parent's tokens of logit distillation)
  against the same shape trained from scratch for (a) the parent's tokens + the recovery tokens (the
  pipeline's scratch twin) and (b) the parent's tokens alone (the twin's WSD branch cooled at the
  parent's step count: the same run up to there, exported and scored like every variant), and how
  many scratch tokens the shape needs to match the pruned + recovered loss (the twin's cooled
  branches, interpolated in log tokens);
- int8 and int4 Δloss (quantized − fp32 of the same checkpoint, per seed) at 20 and 200 tokens/param.

Every interval is Welch's 95% over per-seed values (edgescale.train.seed_stats.welch_delta); the
within-run paired NLL standard error of each seed's difference is kept beside it. Verdicts follow
the interval, whichever way it falls. Tables print, and go to ``OUT/overtrained.{json,md}``; the
JSON is also put into the first seed's 200-tokens/param run directory, whose report then shows the
verdicts (edgescale.report.overtrained).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import yaml

from edgescale.atomic import write_json
from edgescale.compress.recipe import compile_chain
from edgescale.config import Recipe, builtin_dir
from edgescale.pipeline import Pipeline
from edgescale.progress import Reporter
from edgescale.report import overtrained as section
from edgescale.report.build import report_run
from edgescale.results import nll
from edgescale.run import run_study
from edgescale.rundir import RunDir
from edgescale.study_inputs import load_inputs
from edgescale.train.schedule import warmup_steps
from edgescale.train.seed_stats import Delta, welch_delta
from edgescale.yamlfile import read_yaml

PRUNE = ("heads_ffn50_recover3", "layer_drop_recover3")
QUANT = ("int8_dynamic", "int4_weight_only")
LOW_RATIO = 20  # Chinchilla's tokens per parameter: the second arm
ARMS = ("overtrained", "chinchilla")


# -- the studies ---------------------------------------------------------------------------
def arm_study(base: dict, arm: str, seed: int, out: Path) -> Path:
    """The study file of one arm and seed: the overtrained study, or its ladder at 20 tokens/param
    with the float and quantized recipes only (the same training settings otherwise)."""
    study = json.loads(json.dumps(base))
    study |= {"name": f"overtrained-{arm}-seed{seed}", "seed": seed}
    if arm == "chinchilla":
        study["training"] = {**study["training"], "tokens_per_param": LOW_RATIO}
        study["recipes"] = ["fp32", *QUANT]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def twin_curves(study_path: Path, run_dir: Path, rep: Reporter, split: str) -> dict[str, dict]:
    """Every pruned variant's scratch twin at each cooled branch, exported and scored: ``vid`` →
    {parent tokens, recovery tokens, steps of (b) vs the parent, warmups, points [{tokens, bpb, nll_file}]}.
    Everything the run already did is reused from its cache; only the branches' exports are new."""
    inputs = load_inputs(study_path)
    fp32 = compile_chain(Recipe(name="fp32"), "scratch twin branch")
    out: dict[str, dict] = {}
    with RunDir(run_dir, log=rep.warn) as rd:
        pipe = Pipeline(inputs, rd, rep)
        for plan in pipe.candidates:
            trained = pipe.train_size(plan)
            for chain in (c for c in pipe.chains if c.name in PRUNE):
                out[f"{plan.name}/{chain.name}"] = _twin_curve(pipe, plan, chain, trained, fp32, split)
    return out


def _twin_curve(pipe: Pipeline, plan, chain, trained: dict, fp32, split: str) -> dict:
    """One twin (the same plan as Pipeline.scratch_twin makes, so its training is the cached one)."""
    backend = pipe.backends[plan.name]
    result = pipe.run_chain(plan, chain, trained)
    spec = backend.pruned_spec(plan, result)
    extra = sum(s["metrics"].get("tokens", 0) for s in result["steps"] if s["op"] == "distill.recover")
    name = f"{plan.name}-{chain.name}-scratch"
    twin = backend.plan(name, spec, trained["tokens"] + extra, f"scratch twin of {plan.name}/{chain.name}")
    pipe.backends[name] = backend
    rec = pipe.train_size(twin)
    points = []
    for b in [*rec["branches"], {"tokens": rec["tokens"], "checkpoint": rec["checkpoint"], "sha256": rec["sha256"]}]:
        bname = f"{name}-at{b['tokens']}"
        pipe.backends[bname] = backend
        bplan = replace(twin, name=bname, tokens=b["tokens"])
        got = pipe.run_chain(bplan, fp32, {k: b[k] for k in ("checkpoint", "sha256", "tokens")})
        loss = pipe.loss(bname, got["artifact"], got["sha256"], split, True, f"{bname}/fp32")
        points.append({"tokens": b["tokens"], "bpb": loss["bits_per_byte"], "nll_file": loss.get("nll_file")})
    per_step = pipe.study.training.batch_size * pipe.study.block_size
    cfg = pipe.study.training
    return {
        "parent_tokens": trained["tokens"],
        "recovery_tokens": extra,
        "per_step": per_step,
        "warmup_steps_twin": warmup_steps(math.ceil(rec["tokens"] / per_step), cfg),
        "warmup_steps_parent_length_run": warmup_steps(math.ceil(trained["tokens"] / per_step), cfg),
        "points": sorted(points, key=lambda p: p["tokens"]),
    }


# -- one run's numbers -----------------------------------------------------------------------
def _paired(root: Path | None, a: str | None, b: str | None) -> float | None:
    """The within-run paired standard error of bpb(a) − bpb(b) from their per-window NLL files."""
    if root is None or not a or not b:
        return None
    wa, wb = nll.load(root, a), nll.load(root, b)
    c = nll.paired_delta(wa, wb) if wa is not None and wb is not None else None
    return None if c is None or not math.isfinite(c.se_bpb) else c.se_bpb


def _loss(v: dict, split: str) -> tuple[float | None, str | None]:
    s = (v.get("loss") or {}).get(split) or {}
    return s.get("bits_per_byte"), s.get("nll_file")


def collect(results: dict, curves: dict[str, dict], split: str, root: Path | None = None, train_bytes: int = 0) -> dict:
    """One run's per-size numbers from its results.json (as a dict) and :func:`twin_curves`:
    fp32 loss, each quantized Δ (with its paired SE), each pruned variant against both scratch baselines."""
    variants = {v["variant_id"]: v for v in results["variants"]}
    out = {}
    for size in results["sizes"]:
        name = size["size"]
        base = variants.get(f"{name}/fp32")
        if base is None:
            continue
        fp32, fp32_nll = _loss(base, split)
        row = {
            "params_total": size["params_total"],
            "params_non_embedding": size.get("params_non_embedding"),
            "train_tokens": size["train_tokens"],
            "tokens_per_param": size["train_tokens"] / size["params_total"],
            "epochs": size["train_tokens"] / train_bytes if train_bytes else None,
            "fp32_bpb": fp32,
            "quant": {},
            "prune": {},
        }
        for r in QUANT:
            v = variants.get(f"{name}/{r}")
            if v is not None and fp32 is not None:
                q, q_nll = _loss(v, split)
                row["quant"][r] = {"bpb": q, "delta": q - fp32, "paired_se": _paired(root, q_nll, fp32_nll)}
        for r in PRUNE:
            v, curve = variants.get(f"{name}/{r}"), curves.get(f"{name}/{r}")
            if v is not None and v.get("scratch_twin") and curve:
                row["prune"][r] = _prune_row(v, curve, split, root)
        out[name] = row
    return out


def _prune_row(v: dict, curve: dict, split: str, root: Path | None) -> dict:
    pr, pr_nll = _loss(v, split)
    a, a_nll = _loss(v["scratch_twin"], split)
    parent = curve["parent_tokens"]
    b = min(curve["points"], key=lambda p: abs(p["tokens"] - parent))  # the branch cooled at the parent's steps
    return {
        "bpb": pr,
        "params_total": v["params_total"],
        "recovery_tokens": curve["recovery_tokens"],
        "scratch_a": {"bpb": a, "tokens": v["scratch_twin"]["train_tokens"], "paired_se": _paired(root, pr_nll, a_nll)},
        "scratch_b": {
            "bpb": b["bpb"],
            "tokens": b["tokens"],
            "steps_off_parent": (b["tokens"] - parent) // curve["per_step"],
            "warmup_steps": [curve["warmup_steps_twin"], curve["warmup_steps_parent_length_run"]],
            "paired_se": _paired(root, pr_nll, b["nll_file"]),
        },
        "tokens_to_match": tokens_to_match(pr, [(p["tokens"], p["bpb"]) for p in curve["points"]]),
        "curve": [[p["tokens"], p["bpb"]] for p in curve["points"]],
    }


def tokens_to_match(target: float | None, points: list[tuple[int, float]]) -> dict:
    """Scratch tokens at which the twin's loss reaches ``target``: linear in log tokens between the
    two cooled branches that bracket it; outside the measured range only a bound (never extrapolated)."""
    pts = sorted(points)
    if target is None or not pts:
        return {"tokens": None, "bound": None}
    if target < min(b for _, b in pts):
        return {"tokens": pts[-1][0], "bound": ">"}  # scratch never got there within its tokens
    for (d0, b0), (d1, b1) in zip(pts, pts[1:], strict=False):
        if min(b0, b1) <= target <= max(b0, b1) and b0 != b1:
            w = (target - b0) / (b1 - b0)
            return {"tokens": float(math.exp(math.log(d0) + w * (math.log(d1) - math.log(d0)))), "bound": "="}
    if target >= pts[0][1]:
        return {"tokens": pts[0][0], "bound": "<"}  # matched before the first cooled branch
    return {"tokens": None, "bound": None}  # a non-monotone curve with the target in no bracket


# -- across seeds ------------------------------------------------------------------------------
def _delta(label: str, a: list[float], b: list[float]) -> dict:
    d = welch_delta(label, "", a, b)
    return {"mean": d.mean, "lo": d.lo, "hi": d.hi, "n": [d.n_distilled, d.n_scratch]}


def one_sample(values: list[float]) -> dict:
    """Mean of per-seed values with its t interval (Welch's against a constant 0: df = n − 1)."""
    d = welch_delta("", "", values, [0.0, 0.0])
    return {"mean": d.mean, "lo": d.lo, "hi": d.hi, "n": [d.n_distilled]}


def verdict(d: dict | Delta, negative: str, positive: str) -> str:
    """What the interval of a difference says: ``negative`` wins when it lies below 0, ``positive``
    when above; an interval that straddles 0 (or none: one seed) never names a winner."""
    mean, lo, hi = (d.mean, d.lo, d.hi) if isinstance(d, Delta) else (d["mean"], d["lo"], d["hi"])
    if lo is None or hi is None:
        return f"no interval (one seed): {mean:+.4f} bpb, unresolved"
    if hi < 0:
        return f"{negative} by {-mean:.4f} [{-hi:.4f}, {-lo:.4f}] bpb"
    if lo > 0:
        return f"{positive} by {mean:.4f} [{lo:.4f}, {hi:.4f}] bpb"
    return f"no resolvable difference: {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] bpb"


def summarize(runs: dict[str, list[dict]], split: str) -> dict:
    """``runs``: arm → per-seed :func:`collect` outputs. The tables, with verdicts, as JSON."""
    over, low = runs.get("overtrained", []), runs.get("chinchilla", [])
    sizes = list(over[0]) if over else []
    return {
        "split": split,
        "seeds": len(over),
        "pruning": [row for s in sizes for row in _prune_rows(s, over)],
        "quantization": [row for s in sizes for row in _quant_rows(s, over, low)],
        "sizes": {s: {k: over[0][s][k] for k in ("params_total", "params_non_embedding")} for s in sizes},
        "epochs": {s: over[0][s]["epochs"] for s in sizes},
    }


def _prune_rows(size: str, over: list[dict]) -> list[dict]:
    rows = []
    for r in PRUNE:
        seeds = [run[size]["prune"][r] for run in over if r in run.get(size, {}).get("prune", {})]
        if not seeds:
            continue
        pr = [p["bpb"] for p in seeds]
        row = {"size": size, "recipe": r, "pruned_bpb": one_sample(pr), "recovery_tokens": seeds[0]["recovery_tokens"]}
        for arm in ("scratch_a", "scratch_b"):
            d = _delta(arm, pr, [p[arm]["bpb"] for p in seeds])
            d["paired_se_per_seed"] = [p[arm]["paired_se"] for p in seeds]
            d["tokens"] = [p[arm]["tokens"] for p in seeds]
            row[arm] = d | {"verdict": verdict(d, "compression wins", "scratch wins")}
        row["scratch_b"]["steps_off_parent"] = [p["scratch_b"]["steps_off_parent"] for p in seeds]
        matches = [p["tokens_to_match"] for p in seeds]
        row["tokens_to_match"] = matches
        row["match_over_recovery"] = [
            None if m["tokens"] is None else [m["bound"], m["tokens"] / p["recovery_tokens"]]
            for m, p in zip(matches, seeds, strict=True)
        ]
        rows.append(row)
    return rows


def _quant_rows(size: str, over: list[dict], low: list[dict]) -> list[dict]:
    rows = []
    for r in QUANT:
        hi_d = [run[size]["quant"][r]["delta"] for run in over if r in run.get(size, {}).get("quant", {})]
        lo_d = [run[size]["quant"][r]["delta"] for run in low if r in run.get(size, {}).get("quant", {})]
        if not hi_d or not lo_d:
            continue
        d = _delta(r, hi_d, lo_d)
        said = verdict(d, "PTQ hurts less when overtrained", "PTQ hurts more when overtrained")
        rows.append(
            {
                "size": size,
                "recipe": r,
                "ratios": [round(low[0][size]["tokens_per_param"]), round(over[0][size]["tokens_per_param"])],
                "delta_low_ratio": one_sample(lo_d),
                "delta_high_ratio": one_sample(hi_d),
                "paired_se_low_ratio": [run[size]["quant"][r]["paired_se"] for run in low],
                "paired_se_high_ratio": [run[size]["quant"][r]["paired_se"] for run in over],
                "difference": d | {"verdict": said},
            }
        )
    return rows


def route_answer(results: dict) -> dict | None:
    """The report's "train small or train big and compress" answer per device (the law and the
    run's frontier), for the overtrained section to hold the measured verdicts against."""
    routes = (results.get("analysis") or {}).get("routes") or {}
    per = routes.get("per_device") or {}
    return {dev: {"cheaper": d.get("cheaper"), "statement": d.get("statement")} for dev, d in per.items()} or None


# -- the benchmark -----------------------------------------------------------------------------
def run(seeds: list[int], out: Path, study: Path, split: str, rep: Reporter) -> dict:
    base = read_yaml(study)
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    dirs: dict[str, list[Path]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm in ARMS:
            path = arm_study(base, arm, seed, out / "studies")
            run_dir = run_study(path, out / path.stem, rep)
            results = json.loads((run_dir / "results.json").read_text())
            curves = twin_curves(path, run_dir, rep, split) if arm == "overtrained" else {}
            train_bytes = load_inputs(path).corpus["train"].n_bytes
            runs[arm].append(collect(results, curves, split, run_dir, train_bytes))
            dirs[arm].append(run_dir)
    table = summarize(runs, split)
    first = json.loads((dirs["overtrained"][0] / "results.json").read_text())
    table["routes"] = route_answer(first)
    table["runs"] = {arm: [str(d) for d in ds] for arm, ds in dirs.items()}
    table["per_seed"] = runs
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one run per seed (at least 2 for intervals)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-overtrained"))
    ap.add_argument("--study", type=Path, default=builtin_dir("studies") / "overtrained.yaml")
    ap.add_argument("--split", default="test", choices=("validation", "test"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    table = run(args.seeds, args.out, args.study, args.split, Reporter())
    table["wall_seconds"] = round(time.perf_counter() - t0, 1)
    text = section.markdown(table)
    print(text)
    write_json(args.out / "overtrained.json", table)
    (args.out / "overtrained.md").write_text(text)
    # the report of the first seed's overtrained run shows the verdicts (edgescale.report.overtrained)
    first = Path(table["runs"]["overtrained"][0])
    write_json(first / section.FILE, table)
    report_run(first)
    print(f"wrote {args.out / 'overtrained.json'}, {args.out / 'overtrained.md'}; report: {first / 'report.html'}")
    print(f"wall time {table['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
