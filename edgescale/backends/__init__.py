"""Model backends (see :mod:`edgescale.models.backend` for the protocol) and the one place that picks them."""

from __future__ import annotations

from pathlib import Path

from edgescale.backends.custom import CustomBackend
from edgescale.backends.gpt import GPTBackend
from edgescale.compress.registry import Chain
from edgescale.config import Study
from edgescale.data.corpus import Corpus
from edgescale.hf.backend import HFBackend, HFSource  # transformers and optimum load inside its methods
from edgescale.hf.onnx_candidate import OnnxCandidateBackend
from edgescale.models.backend import ModelBackend
from edgescale.models.trust import CodeTrust


def backend_for(
    study: Study, study_path: Path, corpus: Corpus, chains: list[Chain], trust: CodeTrust | None = None
) -> ModelBackend:
    """A single-model study's backend: a Hugging Face folder (``hf_model``), a user's module
    (``model``: its factory runs only if ``trust`` allows it; default: modules beside the study
    file), else the GPT ladder."""
    if study.hf_model is not None:
        return HFBackend(study, study_path, corpus, chains)
    if study.model is not None:
        return CustomBackend(study, corpus, trust or CodeTrust.of(study_path))
    return GPTBackend(study, corpus)


def backends_for(
    study: Study, study_path: Path, corpus: Corpus, chains: list[Chain], trust: CodeTrust | None = None
) -> list[ModelBackend]:
    """Every backend of a study: one per ``models:`` entry that is a folder or a file, plus the
    ladder's (which trains every size; ladder entries choose the sizes that are compressed)."""
    if study.models is None:
        return [backend_for(study, study_path, corpus, chains, trust)]
    out: list[ModelBackend] = [GPTBackend(study, corpus)] if study.ladder is not None else []
    for i, c in enumerate(study.models):
        if c.hf is not None:
            out.append(HFBackend(study, study_path, corpus, chains, HFSource.of(c, study_path)))
        elif c.onnx is not None:
            out.append(OnnxCandidateBackend(study, study_path, corpus, chains, c, field=f"models.{i}"))
    return out
