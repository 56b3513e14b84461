"""Fit Busbridge et al. 2025's distillation scaling law on a teacher × student × tokens grid trained here.

    nice -n 10 .venv/bin/python benchmarks/distill_law.py [--out runs/distill_law] [--workers 2] [--boot 200]

On the shipped Shakespeare corpus (byte tokens, context 64) with edgescale's trainer
(:func:`edgescale.train.trainer.train`): 3 teachers (about 55k-440k non-embedding parameters,
``--teacher-tokens`` each), 3 students (about 7k-31k) distilled from every teacher at 2 token budgets
by pure logit distillation (α = 1, τ = 1, as Busbridge et al.), and every student shape trained from
scratch at both budgets (L̃_S, the supervised loss at the same N_S, D_S). Held-out loss is the
trainer's final validation score of each model (torch, bits per byte on the validation split,
65,536 bytes). N counts total parameters (edgescale's convention; the paper's is non-embedding).

The supervised law (Chinchilla form) is fitted to the scratch students and the teachers; the
distillation law to the 18 distilled students with their measured L̃_S, by
:func:`edgescale.scaling.distill_fit.fit_distill` (forms tried in order, bootstrap over runs).
Printed: the points, the constants with 95% intervals, and the identifiability flags; written:
``OUT/distill_law_fit.json``, which ``edgescale plan --distill-law fit:OUT/distill_law_fit.json`` reads.
Every trained model is cached in OUT (``<run>/result.json``): a rerun retrains nothing it has.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

TEACHERS = {"T55k": (2, 2, 48), "T230k": (3, 4, 80), "T440k": (4, 4, 96)}  # (n_layer, n_head, n_embd)
STUDENTS = {"S7k": (1, 2, 24), "S16k": (1, 2, 36), "S31k": (2, 2, 36)}
BUDGETS = (250_000, 1_000_000)
BLOCK = 64


def _train_one(job: dict) -> dict:
    """Train one model (cached): a teacher, a scratch student, or a student distilled from a teacher."""
    import torch
    from safetensors.torch import load_file

    from edgescale.config import CorpusConfig, TrainingConfig
    from edgescale.data.corpus import load_corpus
    from edgescale.models.checkpoint import build_model, load_weights
    from edgescale.models.shape import GPTConfig, accounting
    from edgescale.train.distill import DistillConfig
    from edgescale.train.trainer import train

    out = Path(job["out"])
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    torch.set_num_threads(1)
    corpus = load_corpus(CorpusConfig())
    cfg = GPTConfig(*job["shape"], block_size=BLOCK)
    tc = TrainingConfig(batch_size=32, threads=1, eval_every_tokens=10**9, checkpoint_every_steps=10**6, min_tokens=1)
    teacher, distill = None, None
    if job.get("teacher"):
        t = job["teacher"]
        teacher = build_model(GPTConfig(*t["shape"], block_size=BLOCK), seed=0)
        load_weights(teacher, load_file(t["checkpoint"]))
        distill = DistillConfig(alpha=1.0, temperature=1.0)  # pure distillation (Busbridge et al. App. I)
    t0 = time.perf_counter()
    res = train(cfg, tc, corpus, job["tokens"], 0, out, job["name"], teacher=teacher, distill=distill)
    acct = accounting(cfg, BLOCK)
    result = {
        **{k: v for k, v in job.items() if k not in ("out", "teacher")},
        "teacher_name": (job.get("teacher") or {}).get("name"),
        "checkpoint": str(res.checkpoint),
        "tokens": res.tokens,
        "params_total": acct.params_total,
        "params_non_embedding": acct.params_non_embedding,
        "val_bpb": res.curve[-1]["val_bpb"],
        "seconds": time.perf_counter() - t0,
    }
    done.write_text(json.dumps(result))
    return result


def _run(pool: ProcessPoolExecutor, jobs: list[dict]) -> dict[str, dict]:
    jobs = sorted(jobs, key=lambda j: -np.prod(j["shape"][::2]) * j["tokens"])  # largest first: a short tail
    return {r["name"]: r for r in pool.map(_train_one, jobs)}


def train_grid(out: Path, workers: int, teacher_tokens: int, scale: float = 1.0) -> tuple[dict, dict, dict]:
    budgets = [max(1, int(b * scale)) for b in BUDGETS]

    def job(name, shape, tokens, teacher=None):
        return {"name": name, "shape": shape, "tokens": tokens, "out": str(out / name), "teacher": teacher}

    with ProcessPoolExecutor(workers) as pool:
        first = [job(n, s, teacher_tokens) for n, s in TEACHERS.items()]
        first += [job(f"{n}-scratch-{d}", s, d) for n, s in STUDENTS.items() for d in budgets]
        done = _run(pool, first)
        teachers = {n: done[n] for n in TEACHERS}
        scratch = {k: v for k, v in done.items() if "-scratch-" in k}
        kd = [
            job(f"{n}-from-{t}-{d}", s, d, {"name": t, "shape": TEACHERS[t], "checkpoint": teachers[t]["checkpoint"]})
            for t in TEACHERS
            for n, s in STUDENTS.items()
            for d in budgets
        ]
        distilled = _run(pool, kd)
    return teachers, scratch, distilled


def fit(teachers: dict, scratch: dict, distilled: dict, n_boot: int, out: Path):
    from edgescale.scaling.distill_fit import DistillPoints, fit_distill, fit_supervised, write_fit

    sup_runs = list(scratch.values()) + list(teachers.values())
    sup, sup_record = fit_supervised(
        [r["params_total"] for r in sup_runs],
        [r["tokens"] for r in sup_runs],
        [r["val_bpb"] for r in sup_runs],
        n_boot=n_boot,
    )
    rows = sorted(distilled.values(), key=lambda r: (r["teacher_name"], r["params_total"], r["tokens"]))
    twin = {(r["params_total"], r["tokens"]): r["val_bpb"] for r in scratch.values()}
    pts = DistillPoints(
        teacher_loss=np.array([teachers[r["teacher_name"]]["val_bpb"] for r in rows]),
        n_s=np.array([r["params_total"] for r in rows], dtype=float),
        d_s=np.array([r["tokens"] for r in rows], dtype=float),
        student_loss=np.array([r["val_bpb"] for r in rows]),
        supervised_loss=np.array([twin[(r["params_total"], r["tokens"])] for r in rows]),
    )
    law, tried = fit_distill(
        pts,
        sup,
        n_boot=n_boot,
        name="fit",
        source="benchmarks/distill_law.py: 3 teachers x 3 students x 2 budgets on Shakespeare (L̃_S measured)",
        loss_unit="bits/byte",
        corpus="shakespeare (byte tokens, context 64), validation split",
        n_convention="total",
    )
    extra = {"supervised_fit": sup_record, "runs": {"teachers": teachers, "scratch": scratch, "distilled": distilled}}
    path = write_fit(out / "distill_law_fit.json", law, tried, pts, extra)
    return law, tried, pts, rows, path


def report(console: Console, teachers, scratch, rows, pts, law, tried, path: Path, wall: float) -> None:
    t = Table(title="teachers and scratch runs (held-out bits/byte, validation split)")
    for c in ("run", "N total", "N non-emb", "tokens", "val bpb", "s"):
        t.add_column(c)
    for r in [*teachers.values(), *sorted(scratch.values(), key=lambda r: (r["params_total"], r["tokens"]))]:
        t.add_row(
            r["name"],
            f"{r['params_total']:,}",
            f"{r['params_non_embedding']:,}",
            f"{r['tokens']:,}",
            f"{r['val_bpb']:.4f}",
            f"{r['seconds']:.0f}",
        )
    console.print(t)
    t = Table(title="distilled students: points of the fit")
    for c in ("teacher", "L_T", "N_S", "D_S", "L_S", "L̃_S (scratch)", "L_S − L̃_S", "law"):
        t.add_column(c)
    pred = law.student_loss(pts.n_s, pts.d_s, pts.teacher_loss, pts.supervised_loss)
    for i, r in enumerate(rows):
        t.add_row(
            r["teacher_name"],
            f"{pts.teacher_loss[i]:.4f}",
            f"{int(pts.n_s[i]):,}",
            f"{int(pts.d_s[i]):,}",
            f"{pts.student_loss[i]:.4f}",
            f"{pts.supervised_loss[i]:.4f}",
            f"{pts.student_loss[i] - pts.supervised_loss[i]:+.4f}",
            f"{pred[i]:.4f}",
        )
    console.print(t)
    for f in tried:
        t = Table(title=f"form: {f.form} (rmse of log residuals {f.rmse_log:.4f}, {f.boot_used} bootstrap refits)")
        for c in ("constant", "value", "95% interval", "status"):
            t.add_column(c)
        for k, v in zip(("c0", "c1", "f1", "d1", "A'", "B'", "α'", "β'", "γ'"), f.theta, strict=True):
            key = {"A'": "A", "B'": "B", "α'": "alpha", "β'": "beta", "γ'": "gamma"}.get(k, k)
            lo_hi = f.ci.get(key)
            status = f"fixed ({f.fixed[key]:.4g})" if key in f.fixed else f.unidentified.get(key, "identified")
            t.add_row(k, f"{v:.4g}", f"[{lo_hi[0]:.3g}, {lo_hi[1]:.3g}]" if lo_hi else "-", status)
        console.print(t)
    s = law.supervised
    console.print(
        f"supervised law: E={s.E:.4g} A={s.A:.4g} B={s.B:.4g} α={s.alpha:.4g} β={s.beta:.4g} ({s.name}); "
        f"unidentified: {', '.join(s.unidentified) or 'none'}"
    )
    console.print(f"law used: {law.form} — status {law.status}; flags: {law.unidentified or 'none'}")
    console.print(f"fit written to {path}  (edgescale plan --distill-law fit:{path} ...)")
    console.print(f"wall time {wall:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/distill_law"))
    ap.add_argument("--workers", type=int, default=2, help="training processes (one thread each)")
    ap.add_argument("--teacher-tokens", type=int, default=1_000_000)
    ap.add_argument("--boot", type=int, default=200, help="bootstrap refits per form")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the students' budgets (a quick smoke run)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    teachers, scratch, distilled = train_grid(args.out, args.workers, args.teacher_tokens, args.scale)
    law, tried, pts, rows, path = fit(teachers, scratch, distilled, args.boot, args.out)
    report(Console(width=160), teachers, scratch, rows, pts, law, tried, path, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
