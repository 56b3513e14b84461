"""The backend of edgescale's own GPT family: a ladder of shapes trained here.

Every registered step runs as registered (the structured pruning steps rebuild its
Linear layers by name; ``export.onnx`` exports prefill and KV-cache decode in one graph).
A structurally pruned variant ships a smaller shape, which a scratch twin trains from
scratch for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgescale.backends.torch_lm import TorchBackend
from edgescale.models.backend import Shipped, SizePlan, StepFn
from edgescale.models.checkpoint import read_spec
from edgescale.models.shape import GPTConfig, accounting, ladder_sizes, shape_record, widest_activation


class GPTBackend(TorchBackend):
    name = "gpt"

    def plans(self, tokens_for: Callable[[int], tuple[int, str]]) -> list[SizePlan]:
        s = self.study
        out = []
        for rung in ladder_sizes(s.ladder, self.corpus.vocab_size):
            cfg = GPTConfig(rung.n_layer, rung.n_head, rung.n_embd, self.corpus.vocab_size, s.block_size)
            # total N (embeddings included): the convention of the fitted law the points feed
            n = accounting(cfg, s.evaluation.context_length).params_total
            out.append(self.plan(rung.name, cfg, *tokens_for(n)))
        return out

    def plan(self, name: str, spec: GPTConfig, tokens: int, capped_by: str) -> SizePlan:
        acct = accounting(spec, self.study.evaluation.context_length)
        return SizePlan(name, spec, acct, tokens, capped_by, shape=shape_record(spec))

    def implementation(self, step) -> StepFn:
        return step.definition.implementation(self.name)

    def account(self, checkpoint: Path, context: int) -> Shipped:
        spec = read_spec(checkpoint)
        return Shipped(accounting(spec, context), widest_activation(spec, context), shape_record(spec), spec.to_dict())

    def pruned_spec(self, plan: SizePlan, record: dict) -> GPTConfig | None:
        return None if record["spec"] in (None, plan.cfg.to_dict()) else GPTConfig(**record["spec"])
