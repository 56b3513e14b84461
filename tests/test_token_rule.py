"""The ladder's token rule counts N as total parameters (embeddings included), the convention of
the scaling law its points are fitted to."""

from types import SimpleNamespace

import yaml
from tiny_study import TINY

from edgescale.backends.gpt import GPTBackend
from edgescale.config import Study, builtin_dir
from edgescale.models.shape import GPTConfig, accounting, ladder_sizes
from edgescale.study_inputs import _tokens_for


class _Corpus(dict):
    """What the token rule reads of a corpus: the train split's size and the vocabulary."""

    def __init__(self, train_bytes: int, vocab: int):
        super().__init__(train=SimpleNamespace(n_bytes=train_bytes, n_tokens=train_bytes))  # byte tokens
        self.vocab_size = vocab


def test_plans_give_the_token_rule_total_n():
    study = Study.model_validate({**TINY, "training": {**TINY["training"], "min_tokens": 1, "max_tokens": 10**9}})
    corpus = _Corpus(10**9, 256)
    asked = []

    def tokens_for(n):
        asked.append(n)
        return _tokens_for(study, corpus, n)

    plans = GPTBackend.plans(SimpleNamespace(study=study, corpus=corpus, plan=lambda *a: a), tokens_for)
    totals = [
        accounting(GPTConfig(r.n_layer, r.n_head, r.n_embd, 256, study.block_size), 32).params_total
        for r in ladder_sizes(study.ladder, 256)
    ]
    assert asked == totals
    # tokens_per_param 1: D = N total, and the rule says which N
    assert [p[2] for p in plans] == totals and all(p[3] == "1 tokens/param (N total)" for p in plans)


def test_default_ladder_tokens_in_total_n():
    """The default study's comment states the budgets: s0 0.5M (20 x 25k total), s1-s3 1.25M
    (max_tokens; s1 would have 1.5M at 20 x 75k total)."""
    study = Study.model_validate(yaml.safe_load((builtin_dir("studies") / "default.yaml").read_text()))
    corpus = _Corpus(4_190_000, 256)
    budgets = []
    for r in ladder_sizes(study.ladder, 256):
        cfg = GPTConfig(r.n_layer, r.n_head, r.n_embd, 256, study.ladder.block_size)
        budgets.append(_tokens_for(study, corpus, accounting(cfg, study.evaluation.context_length).params_total))
    assert [t for t, _ in budgets] == [501_120, 1_250_000, 1_250_000, 1_250_000]
    assert [why for _, why in budgets] == ["20 tokens/param (N total)", "max_tokens", "max_tokens", "max_tokens"]
