"""The stages of a study: plan the ladder, train, compress/export, score, measure.

:func:`edgescale.run.run_study` puts them together into a run directory, here or on Ray
(:mod:`edgescale.executor`, whose tasks run these same stages). Every unit of work is
keyed by what it depends on (see :mod:`edgescale.rundir`), so a rerun reuses finished
work and says so, and an interrupted run resumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from edgescale import __version__
from edgescale.bench.measure import MeasureSpec, measure_variants
from edgescale.chain import ChainStart, run_chain
from edgescale.compress.feasibility import ModelSize, check_study
from edgescale.compress.recipe import compile_chain
from edgescale.compress.registry import Chain
from edgescale.config import EvaluationConfig, Recipe
from edgescale.data.corpus import eval_spans
from edgescale.failures import (  # noqa: F401 -- re-exported: they were defined here first
    VARIANT_FAILURES,
    NumericsError,
    VariantFailure,
    attempt,
    is_variant_failure,
)
from edgescale.models.backend import SizePlan
from edgescale.progress import Reporter
from edgescale.resources import metered
from edgescale.results import nll
from edgescale.rundir import RunDir, key_of
from edgescale.study_inputs import Inputs, compressed_names
from edgescale.train.replicates import TORCH_SCORER, torch_bpb
from edgescale.train.seed_stats import equal_compute_tokens

SPLITS = ("validation", "test")
TWIN_LOSS_KEYS = ("bits_per_byte", "nats_per_token", "tokens", "se_bpb", "nll_file")


@dataclass(frozen=True)
class TrainJob:
    """One training run of a stage: a plan, its teacher's record (distillation), a seed other than
    the study's (a replicate), and the size whose backend trains it (default: the plan's own)."""

    plan: SizePlan
    teacher: dict | None = None
    seed: int | None = None
    backend: str = ""


RunJobs = Callable[[list[TrainJob]], list[dict]]  # a stage of independent jobs -> their records, in order


def scoring(e: EvaluationConfig) -> dict:
    """What a loss record's key covers of the evaluation settings: how a loss is scored, not which."""
    return e.model_dump(exclude={"degradation_grid"})


class Pipeline:
    def __init__(self, inputs: Inputs, rd: RunDir, rep: Reporter) -> None:
        self.study, self.corpus, self.chains, self.plans = inputs.study, inputs.corpus, inputs.chains, inputs.plans
        self.backends = dict(inputs.backends)  # scratch twins and students join their parent's backend
        self.rd, self.rep = rd, rep
        self._warned: set[tuple[str, str]] = set()
        self.replicates: dict[str, list[dict]] = {}  # ladder size -> its extra-seed runs (train_all)
        self.distill_runs: dict[str, dict] = {}  # student -> seeds of it and its twins, scored (train_all)

    # -- training ----------------------------------------------------------------
    def train_size(self, plan: SizePlan, teacher: dict | None = None, seed: int | None = None) -> dict:
        """The chain's source for one rung: trained here (or, with ``teacher``, distilled from that
        trained rung), or the checkpoint the study names, copied into the run. A ``seed`` other than
        the study's trains a replicate: its own resumable run under its own key and directory."""
        return self.train_job(TrainJob(plan, teacher, seed))

    def train_job(self, job: TrainJob) -> dict:
        """:meth:`train_size` for one job (what an executor's task runs)."""
        backend = self.backends[job.backend or job.plan.name]
        if job.seed is None:
            return backend.source(self.rd, self.rep, job.plan, job.teacher)
        return backend.source(self.rd, self.rep, job.plan, job.teacher, job.seed)

    def run_here(self, jobs: list[TrainJob]) -> list[dict]:
        """The local executor's way to run a stage of training jobs: one after another."""
        return [self.train_job(j) for j in jobs]

    @property
    def candidates(self) -> list[SizePlan]:
        """The sizes whose variants are made (see :func:`compressed_names`), in plan order."""
        names = set(compressed_names(self.study, self.plans))
        return [p for p in self.plans if p.name in names]

    def train_all(self, run_jobs: RunJobs | None = None) -> dict[str, dict]:
        """The ladder (with ``training.seeds`` > 1, its replicates in ``self.replicates``), then (if
        asked) the distilled students, which join ``self.plans``, and their seeds and twins.

        Training comes in stages of independent jobs, each stage handed to ``run_jobs`` (default:
        :meth:`run_here`; the Ray executor runs a stage's jobs as parallel tasks): every size and
        replicate; then every student's seeds and equal-token twins (after their teacher); then the
        equal-compute twins (their budget is the students' compute)."""
        run = run_jobs or self.run_here
        ladder = set(self.study.ladder.names()) if self.study.ladder else set()
        extra = [self.study.seed + i for i in range(1, self.study.training.seeds)]
        jobs = [TrainJob(p) for p in self.plans]
        jobs += [TrainJob(p, None, seed) for p in self.plans if p.name in ladder for seed in extra]
        done = run(jobs)
        trained = {j.plan.name: r for j, r in zip(jobs, done, strict=True) if j.seed is None}
        for j, r in zip(jobs, done, strict=True):
            if j.seed is not None:
                self.replicates.setdefault(j.plan.name, []).append(r)
        kd = self.study.distillation
        if kd:
            self._distill_all(run, trained)
        return trained

    def _distill_all(self, run: RunJobs, trained: dict[str, dict]) -> None:
        """Every student: its seeds and equal-token twins as one stage, its equal-compute twins as the
        next; each scored on validation and test by one scorer (:mod:`edgescale.train.replicates`)."""
        kd = self.study.distillation
        by_name = {p.name: p for p in self.plans}
        seeds = [self.study.seed + i for i in range(kd.seeds)]
        teacher = trained[kd.teacher]
        students = {s: replace(by_name[s], name=f"{s}-kd", teacher=kd.teacher) for s in kd.students}
        jobs = []
        for student, plan in students.items():
            self.backends[plan.name] = self.backends[student]
            jobs += [TrainJob(plan, teacher, None if s == self.study.seed else s, student) for s in seeds]
            jobs += [TrainJob(by_name[student], None, s) for s in seeds[1:]]
        done = dict(zip(((j.plan.name, j.seed) for j in jobs), run(jobs), strict=True))
        arms: dict[str, dict[str, list[dict]]] = {}
        for student, plan in students.items():
            trained[plan.name] = done[(plan.name, None)]
            self.plans.append(plan)
            arms[student] = {
                "distilled": [trained[plan.name]] + [done[(plan.name, s)] for s in seeds[1:]],
                "equal_tokens": [trained[student]] + [done[(student, s)] for s in seeds[1:]],
            }
        if kd.equal_compute:
            twins = {
                s: self._equal_compute_twin(by_name[s], trained[p.name], by_name[kd.teacher])
                for s, p in students.items()
            }
            jobs = [TrainJob(twin, None, s, student) for student, (twin, _) in twins.items() for s in seeds]
            done = dict(zip(((j.plan.name, j.seed) for j in jobs), run(jobs), strict=True))
        for student in students:
            out: dict = {"seeds": seeds, "scorer": TORCH_SCORER}
            if kd.equal_compute:
                twin, note = twins[student]
                arms[student]["equal_compute"] = [done[(twin.name, s)] for s in seeds]
                out |= {"equal_compute_tokens": arms[student]["equal_compute"][0]["tokens"], "equal_compute_note": note}
            runs = arms[student]
            out["arms"] = {arm: {sp: [self.torch_loss(r, sp) for r in rs] for sp in SPLITS} for arm, rs in runs.items()}
            out["train_tokens"] = {arm: [r["tokens"] for r in rs] for arm, rs in runs.items()}
            self.distill_runs[student] = out

    def _equal_compute_twin(self, base: SizePlan, distilled: dict, teacher: SizePlan) -> tuple[SizePlan, str]:
        """The student's shape from scratch for the distilled run's FLOPs (teacher forward passes
        included), capped at ``max_epochs``; its backend is the student's."""
        cap = int(self.study.training.max_epochs * self.corpus["train"].n_tokens)
        tokens, note = equal_compute_tokens(base.acct.params_total, teacher.acct.params_total, distilled["tokens"], cap)
        twin = replace(
            base, name=f"{base.name}-eqc", tokens=tokens, capped_by=note or "equal compute", cooled_branches=False
        )
        self.backends[twin.name] = self.backends[base.name]
        return twin, note

    def torch_loss(self, trained: dict, split: str) -> float:
        """Bits per byte of a trained checkpoint (a seed replicate's) on ``split``, cached by its hash."""
        e = self.study.evaluation
        sp = self.corpus[split]
        key = key_of("torch_loss", ckpt=trained["sha256"], split=sp.sha256, protocol=scoring(e), v=__version__)
        rec = self.rd.cached(key)
        if not rec:
            with self.rep.status(f"torch loss of {trained['checkpoint']} on {split}"):
                spans = eval_spans(sp, e.max_bytes, e.segments, e.sampling)  # the protocol's segments
                ckpt = self.rd.inside(trained["checkpoint"])
                bpb = torch_bpb(ckpt, sp, e.context_length, e.stride, e.max_bytes, e.batch_size, spans)
            rec = self.rd.record(key, {"bits_per_byte": bpb})
        return rec["bits_per_byte"]

    # -- compression and export --------------------------------------------------
    def feasibility(self, plan: SizePlan, chain: Chain) -> list[dict]:
        """Warnings for this variant on the host and every study device (refusals stopped load_inputs)."""
        size = {plan.name: ModelSize.of(plan.acct, self.study.block_size)}
        findings = check_study([chain], size, self.study.devices)[(plan.name, chain.name)]
        for f in findings:
            if (chain.name, f.message()) not in self._warned:  # the same warning for every size, once
                self._warned.add((chain.name, f.message()))
                self.rep.warn(f"{chain.name}: {f.message()}")
        return [f.to_dict() for f in findings]

    def run_chain(self, plan: SizePlan, chain: Chain, trained: dict) -> dict:
        """One variant: its feasibility warnings, the chain's steps, and the model it ships counted."""
        feasibility = self.feasibility(plan, chain)
        start = ChainStart(trained["checkpoint"], trained["sha256"], trained["tokens"])
        backend = self.backends[plan.name]
        run = run_chain(backend, chain, start, self.rd, self.rep, plan.name, self.study.seed, name_failed_step=True)
        shipped = backend.account(self.rd.inside(run.checkpoint), self.study.measurement.decode_context)
        return {
            "artifact": run.artifact,
            "sha256": run.sha256,
            "last_op": run.last_op,
            "steps": run.steps,
            "feasibility": feasibility,
            **shipped.record(),
        }

    # -- pruned variants beside the same shape trained from scratch -------------------
    def scratch_twin(self, plan: SizePlan, chain: Chain, result: dict, trained: dict) -> dict | None:
        """A structurally pruned variant's twin: its shape trained from scratch for the same
        total tokens (the parent's plus recovery's), exported and scored the same way."""
        backend = self.backends[plan.name]
        spec = backend.pruned_spec(plan, result)
        if spec is None:
            return None
        extra = sum(s["metrics"].get("tokens", 0) for s in result["steps"] if s["op"] == "distill.recover")
        name = f"{plan.name}-{chain.name}-scratch"
        why = f"scratch twin of {plan.name}/{chain.name}: parent tokens + recovery tokens"
        twin = backend.plan(name, spec, trained["tokens"] + extra, why)
        self.backends[name] = backend
        rec = self.train_size(twin)
        export = compile_chain(Recipe(name="fp32"), "scratch twin")
        out = self.run_chain(twin, export, rec)
        loss = {sp: self.loss(name, out["artifact"], out["sha256"], sp, True, f"{name}/fp32") for sp in SPLITS}
        return {
            "size": name,
            "shape": spec.to_dict(),
            "train_tokens": rec["tokens"],
            "onnx_path": out["artifact"],
            "onnx_sha256": out["sha256"],
            "loss": {sp: {k: r.get(k) for k in TWIN_LOSS_KEYS} for sp, r in loss.items()},
        }

    # -- loss through onnxruntime ------------------------------------------------
    def loss(self, size: str, rel: str, sha: str, split: str, strict: bool, vid: str | None = None) -> dict:
        """Held-out loss of an ONNX artifact of ``size``, in the tokens its backend reads the corpus in,
        with its per-window NLL saved beside the run (``nll_file``, named after ``vid``; see
        edgescale.results.nll) for paired standard errors of loss differences.

        ``strict`` for the exported float graph: ONNX-stage steps (quantization) may move
        logits slightly through per-call activation scales (see edgescale.guard).
        """
        e = self.study.evaluation
        backend = self.backends[size]
        sp = backend.corpus[split]
        key = key_of("loss", onnx=sha, split=sp.sha256, protocol=scoring(e), v=__version__)
        rec = self.rd.cached(key)
        if rec:
            return rec
        with metered() as use, self.rep.status(f"{size}: held-out loss on {split}"):
            rec = backend.score(self.rd.inside(rel), split, e, strict)
        rec |= {"tokenizer": backend.tokenizer, "resources": use.to_dict()}
        if not math.isfinite(rec["bits_per_byte"]):  # checked before recording: a rerun scores it again
            raise NumericsError(f"held-out loss on {split} is {rec['bits_per_byte']} (non-finite logits)")
        windows = rec.pop("windows", None)
        se = rec.get("se_bpb")
        rec["se_bpb"] = se if se is not None and math.isfinite(se) else None  # one window: no error
        # saved before the record: a cached record's nll_file names a file that was complete
        rec["nll_file"] = nll.save(self.rd.root, vid or f"{size}/{sha[:12]}", split, windows) if windows else None
        return self.rd.record(key, rec)

    def losses(self, vid: str, v: dict, splits: tuple[str, ...] = SPLITS, size: str | None = None) -> dict[str, dict]:
        """A chained variant's loss on ``splits`` (strict causality for an exported float graph)."""
        size, last = size or vid.split("/")[0], v["steps"][-1] if v.get("steps") else {}
        strict = v["last_op"] == "export.onnx" or (
            v["last_op"] == "export.genai" and last["metrics"]["precision"] == "fp32"
        )
        return {s: self.loss(size, v["artifact"], v["sha256"], s, strict, vid) for s in splits}

    # -- host latency --------------------------------------------------------------
    def measure(self, variants: dict[str, dict]) -> dict:
        m = self.study.measurement
        spec = MeasureSpec(
            prompt_len=m.prompt_len,
            decode_context=m.decode_context,
            repeats=m.repeats,
            warmup=m.warmup,
            threads=m.threads,
            processes=m.processes,
            seed=self.study.seed,
        )
        hashes = {vid: v["sha256"] for vid, v in variants.items()}
        key = key_of("measure", hashes=hashes, spec=spec.model_dump(), v=__version__)
        rec = self.rd.cached(key)
        if rec:
            self.rep.reuse("host latency", f"{len(variants)} variants")
            return rec
        paths = {vid: self.rd.inside(v["artifact"]) for vid, v in variants.items()}
        with metered() as use, self.rep.status(f"measuring {len(paths)} variants interleaved ({m.repeats} repeats)"):
            report = measure_variants(paths, spec)
        return self.rd.record(key, {**report.to_dict(), "resources": use.to_dict()})

    def measure_each(self, variants: dict[str, dict]) -> tuple[dict, dict[str, VariantFailure]]:
        """Host latency of ``variants`` interleaved, as :meth:`measure`. When that fails as a
        variant can, each is timed alone to find which; the others are then measured together."""
        if not variants:
            return {"variants": {}}, {}
        got = attempt("*", "measure", self.measure, variants)
        if not isinstance(got, VariantFailure):
            return got, {}
        failed = {}
        for vid, v in variants.items():
            alone = attempt(vid, "measure", self.measure, {vid: v})
            if isinstance(alone, VariantFailure):
                failed[vid] = alone
        if not failed:  # no one variant is to blame (the host, the worker): the run's failure
            raise RuntimeError(f"latency measurement failed, yet every variant measures alone: {got.reason}")
        rest = {vid: v for vid, v in variants.items() if vid not in failed}
        latency, more = self.measure_each(rest)
        return latency, failed | more
