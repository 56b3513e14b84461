"""The one chain runner: a recipe's steps, in order, on one model, through its backend.

``edgescale run`` (every variant and scratch twin, locally or as Ray tasks) and
``edgescale quantize`` both come here. A step's result is cached under its lineage key
(op, config, input hash plus the backend's context, edgescale version) in a run
directory; ``quantize`` passes a :class:`ScratchStore` instead, which keeps nothing.
Which function runs a step, how a torch model is loaded and saved, and what the step
may use (the corpus in the model's tokens, calibration windows, the parent model) all
come from the backend: nothing here knows which kind of model it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgescale import __version__
from edgescale.compress.isa import resolution_key
from edgescale.compress.registry import Chain, Step, StepContext
from edgescale.export.canonical import file_sha256
from edgescale.models.backend import ModelBackend
from edgescale.progress import Reporter
from edgescale.resources import metered


class ArtifactStore(Protocol):
    """What the runner needs of a run directory (:class:`edgescale.rundir.RunDir`)."""

    root: Path

    def cached(self, key: str) -> dict | None: ...

    def work_dir(self, key: str) -> Path: ...

    def store(self, src: Path) -> tuple[Path, str]: ...

    def record(self, key: str, rec: dict, artifacts: dict[str, str] | None = None) -> dict: ...


class ScratchStore:
    """A store that caches nothing: each step works in its own numbered folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._steps = 0

    def cached(self, key: str) -> dict | None:
        return None

    def work_dir(self, key: str) -> Path:
        d = self.root / str(self._steps)
        self._steps += 1
        d.mkdir()
        return d

    def store(self, src: Path) -> tuple[Path, str]:
        return Path(src).resolve(), file_sha256(src)  # absolute: ``root / path`` is the path itself

    def record(self, key: str, rec: dict, artifacts: dict[str, str] | None = None) -> dict:
        return rec


class StepFailed(Exception):
    """A chain step raised ``cause`` (also its ``__cause__``): names the step, so a study can
    record which step of which variant failed (see :func:`edgescale.pipeline.attempt`)."""

    def __init__(self, op: str, cause: Exception) -> None:
        super().__init__(f"{op}: {type(cause).__name__}: {cause}")
        self.op, self.cause = op, cause


@dataclass(frozen=True)
class ChainStart:
    """The artifact a chain starts from (a path relative to the store's root, or absolute)."""

    artifact: str
    sha256: str
    tokens: int = 0  # tokens the starting model was trained on (recovery budgets scale with them)


@dataclass(frozen=True)
class ChainRun:
    artifact: str  # the last step's output
    sha256: str
    last_op: str
    steps: list[dict]  # per step: op, artifact, sha256, metrics
    checkpoint: str  # the last torch-stage model (the starting one if no step gave a torch model)


def run_chain(
    backend: ModelBackend,
    chain: Chain,
    start: ChainStart,
    store: ArtifactStore,
    rep: Reporter,
    name: str,
    seed: int = 0,
    *,
    name_failed_step: bool = False,
) -> ChainRun:
    """Run ``chain`` from ``start``; ``name`` labels progress lines (``{name}/{chain}: {op}``).

    ``name_failed_step``: a step's exception comes out as :class:`StepFailed` (a study flags
    that variant with the step); without it, unchanged (``edgescale quantize``: the CLI's).
    Nothing is recorded for a failed step, so a rerun retries it."""
    rel, sha, kind = start.artifact, start.sha256, backend.takes
    steps, checkpoint = [], start.artifact
    for step in chain.steps:
        # `auto` quantization settings resolve per target ISA: the key says which (edgescale.compress.isa)
        key = step.key(backend.step_input(sha) + resolution_key(step.config, chain.target), __version__)
        rec = store.cached(key)
        if rec:
            rep.reuse(f"{name}/{chain.name}: {step.op}", rec["artifact"])
        else:
            try:
                rec = _run_step(backend, step, kind, rel, key, start, store, rep, name, seed, chain.target)
            except Exception as e:
                if name_failed_step:
                    raise StepFailed(step.op, e) from e
                raise
        rel, sha, kind = str(rec["artifact"]), rec["sha256"], step.definition.gives
        checkpoint = rel if kind == "torch" else checkpoint
        steps.append(
            {
                "op": step.op,
                "artifact": rel,
                "sha256": sha,
                "metrics": rec.get("metrics", {}),
                "resources": rec.get("resources"),
            }
        )
    return ChainRun(rel, sha, chain.steps[-1].op, steps, checkpoint)


def _run_step(
    backend: ModelBackend,
    step: Step,
    kind: str,
    src: str,
    key: str,
    start: ChainStart,
    store: ArtifactStore,
    rep: Reporter,
    name: str,
    seed: int,
    target: Any = None,
) -> dict:
    work = store.work_dir(key)
    ctx = StepContext(
        work_dir=work,
        seed=seed,
        log=rep.info,
        calibration=backend.calibration,
        parent=backend.load(store.root / start.artifact) if kind == "torch" else None,
        parent_tokens=start.tokens,
        corpus=backend.corpus,
        target=target,
    )
    fn = backend.implementation(step)
    with metered() as use, backend.running_step(), rep.status(f"{name}: {step.op}"):
        model = backend.load(store.root / src) if kind == "torch" else store.root / src
        out = fn(model, step.config, ctx)
        del model  # a torch model's weights go before the next step loads its own
        if step.definition.gives == "torch":
            out = backend.save(out, work / "model.safetensors", {"op": step.op})
    rel, sha = store.store(Path(out))
    rep.done(f"{name}: {step.op}", f"{rel} in {use.wall_s:.1f}s, peak RSS {_gb(use.peak_rss_bytes)}")
    rec = {"op": step.op, "artifact": str(rel), "sha256": sha, "metrics": ctx.metrics, "resources": use.to_dict()}
    return store.record(key, rec, {str(rel): sha})


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.2f} GB"
