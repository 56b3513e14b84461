"""The backend of a user's own module (``model: {factory: ...}``) behind the adapter.

The module is opaque: it is counted once from its parameters (no attention term, no KV
cache), its shape is unknown to results beyond the factory's name, and it exports as a
single ``input_ids → logits`` graph that recomputes the context for every token.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import edgescale.export.steps  # noqa: F401  (registers export.onnx for custom modules)
import edgescale.train.recover  # noqa: F401  (registers distill.recover for custom modules)
from edgescale.backends.torch_lm import TorchBackend
from edgescale.config import Study
from edgescale.data.corpus import Corpus
from edgescale.models.backend import Shipped, SizePlan, StepFn
from edgescale.models.checkpoint import read_spec
from edgescale.models.custom import CustomSpec, accounting_of, resolve_factory
from edgescale.models.trust import CodeTrust


def _shape(spec: CustomSpec) -> dict:
    return {"n_layer": None, "n_head": None, "n_embd": None, "model": spec.model.factory}


class CustomBackend(TorchBackend):
    name = "custom"

    def __init__(self, study: Study, corpus: Corpus, trust: CodeTrust | None = None) -> None:
        super().__init__(study, corpus)
        self.trust = trust
        self._vet()

    def _vet(self) -> None:
        """Import the factory under the user's trust decision, so later builds in this process may run it."""
        if self.trust is not None and self.study is not None:
            resolve_factory(self.study.model.factory, self.trust)

    def __setstate__(self, state: dict) -> None:
        # Unpickled in a worker process (a Ray task): the trust decision came with the backend,
        # so the worker applies the same rule before it builds anything.
        self.__dict__.update(state)
        self._vet()

    def plans(self, tokens_for: Callable[[int], tuple[int, str]]) -> list[SizePlan]:
        m = self.study.model
        spec = CustomSpec(m, self.corpus.vocab_size, m.block_size)
        acct = accounting_of(spec)
        return [SizePlan(m.name, spec, acct, *tokens_for(acct.params_total), shape=_shape(spec))]

    def plan(self, name: str, spec: CustomSpec, tokens: int, capped_by: str) -> SizePlan:
        return SizePlan(name, spec, accounting_of(spec), tokens, capped_by, shape=_shape(spec))

    def implementation(self, step) -> StepFn:
        # Only the steps registered for adapted modules: distill.recover and export.onnx (no KV
        # cache to export); the pruning steps rebuild or mask a GPT's layers by name and are refused.
        return step.definition.implementation(self.name)

    def account(self, checkpoint: Path, context: int) -> Shipped:
        spec = read_spec(checkpoint)
        return Shipped(accounting_of(spec), None, _shape(spec))  # no spec: an opaque module has no scratch twin

    def pruned_spec(self, plan: SizePlan, record: dict) -> None:
        return None
