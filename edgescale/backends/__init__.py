"""Model backends (see :mod:`edgescale.models.backend` for the protocol) and the one place that picks one."""

from __future__ import annotations

from pathlib import Path

from edgescale.backends.custom import CustomBackend
from edgescale.backends.gpt import GPTBackend
from edgescale.compress.registry import Chain
from edgescale.config import Study
from edgescale.data.corpus import Corpus
from edgescale.hf.backend import HFBackend  # transformers and optimum load inside its methods
from edgescale.models.backend import ModelBackend
from edgescale.models.custom import resolve_factory


def backend_for(study: Study, study_path: Path, corpus: Corpus, chains: list[Chain]) -> ModelBackend:
    """A study's backend: a Hugging Face folder (``hf_model``), a user's module (``model``), else the GPT ladder."""
    if study.hf_model is not None:
        return HFBackend(study, study_path, corpus, chains)
    if study.model is not None:
        resolve_factory(study.model.factory, base=study_path.parent)  # a factory module beside the study file
        return CustomBackend(study, corpus)
    return GPTBackend(study, corpus)
