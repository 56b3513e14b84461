"""Structured pruning of GPT-2 (Conv1D: weights stored (in, out)) and Llama (grouped-query attention).

The property checked: removing a group is exact. The pruned model computes what the
original computes with the removed groups' output-projection inputs zeroed — a GPT-2
head's rows of ``attn.c_proj``, a Llama KV group's ``o_proj`` columns of *all* its query
heads, an FFN channel's row of GPT-2's ``mlp.c_proj`` or column of Llama's ``down_proj``.
A transposed slice, a query head assigned to the wrong KV group, or a changed rotary
dimension would break the equality.
"""

from __future__ import annotations

import copy

import pytest
import torch

from edgescale.compress.prune_structured import FfnConfig, HeadsConfig
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.hf.export import HFCausalLM
from edgescale.hf.prune import prune_ffn_hf, prune_heads_hf
from edgescale.hf.source import load_hf_model

IDS = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(0))


def _ctx(tmp_path, corpus=None):
    return StepContext(tmp_path, log=lambda m: None, corpus=corpus)


def _logits(hf):
    with torch.no_grad():
        return hf(input_ids=IDS, use_cache=False).logits


def _zeroed(hf, kind: str, kept: list[list[int]]):
    """The original with every removed group's output-projection input zeroed."""
    ref = copy.deepcopy(hf)
    c = ref.config
    with torch.no_grad():
        for i, keep in enumerate(kept):
            if c.model_type == "gpt2":
                blk = ref.transformer.h[i]
                w, size = (blk.attn.c_proj.weight, blk.attn.head_dim) if kind == "heads" else (blk.mlp.c_proj.weight, 1)
                for g in range(w.shape[0] // size):
                    if g not in keep:
                        w[g * size : (g + 1) * size, :] = 0  # Conv1D (in, out): a group is rows
            else:
                blk = ref.model.layers[i]
                if kind == "heads":
                    w, size = blk.self_attn.o_proj.weight, c.num_attention_heads // c.num_key_value_heads * c.head_dim
                else:
                    w, size = blk.mlp.down_proj.weight, 1
                for g in range(w.shape[1] // size):
                    if g not in keep:
                        w[:, g * size : (g + 1) * size] = 0  # Linear (out, in): a group is columns
    return ref


def _kept(pruned, kind: str, original) -> list[list[int]]:
    """Which groups survived, found by matching output-projection slices."""
    out = []
    for blk_new, blk_old in zip(*(_blocks(m) for m in (pruned, original)), strict=True):
        new, old, size = _out(blk_new, kind, pruned), _out(blk_old, kind, original), _size(blk_old, kind, original)
        groups_old = [old[:, g * size : (g + 1) * size] for g in range(old.shape[1] // size)]
        keep = []
        for g in range(new.shape[1] // size):
            piece = new[:, g * size : (g + 1) * size]
            keep.append(next(j for j, o in enumerate(groups_old) if torch.equal(o, piece)))
        out.append(keep)
    return out


def _blocks(hf):
    return hf.transformer.h if hf.config.model_type == "gpt2" else hf.model.layers


def _out(blk, kind, hf):
    if hf.config.model_type == "gpt2":
        return (blk.attn.c_proj.weight if kind == "heads" else blk.mlp.c_proj.weight).T
    return blk.self_attn.o_proj.weight if kind == "heads" else blk.mlp.down_proj.weight


def _size(blk, kind, hf):
    if kind == "ffn":
        return 1
    c = hf.config
    return blk.attn.head_dim if c.model_type == "gpt2" else c.num_attention_heads // c.num_key_value_heads * c.head_dim


@pytest.mark.parametrize("which", ["gpt2_dir", "llama_dir"])
@pytest.mark.parametrize("kind", ["heads", "ffn"])
def test_pruning_is_exact_removal(which, kind, request, tmp_path):
    hf, _ = load_hf_model(request.getfixturevalue(which))
    model = HFCausalLM(hf, 32)
    cfg = (HeadsConfig if kind == "heads" else FfnConfig)(amount=0.5, importance="weight_norm")
    ctx = _ctx(tmp_path)
    out = (prune_heads_hf if kind == "heads" else prune_ffn_hf)(model, cfg, ctx)
    kept = _kept(out.hf, kind, hf)
    assert all(len(k) == len(kept[0]) for k in kept)  # uniform: a stock config holds it
    assert torch.allclose(_logits(out.hf), _logits(_zeroed(hf, kind, kept)), atol=1e-5)
    assert ctx.metrics["params_non_embedding_after"] < ctx.metrics["params_non_embedding_before"]
    c = out.hf.config
    if hf.config.model_type == "llama" and kind == "heads":
        # one KV group of two left: its two query heads stay with it, head_dim (rotary) unchanged
        assert (c.num_key_value_heads, c.num_attention_heads, c.head_dim) == (1, 2, 8)
        assert ctx.metrics["kv_bytes_per_token_after"] == 2 * 2 * 8 * 4


@pytest.mark.parametrize("which", ["gpt2_dir", "llama_dir"])
def test_pruned_checkpoint_loads_with_stock_transformers(which, request, tmp_path):
    from transformers import AutoModelForCausalLM

    hf, _ = load_hf_model(request.getfixturevalue(which))
    out = prune_heads_hf(HFCausalLM(hf, 32), HeadsConfig(amount=0.5, importance="random"), _ctx(tmp_path))
    out = prune_ffn_hf(out, FfnConfig(amount=0.5, importance="random"), _ctx(tmp_path))
    out.hf.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", local_files_only=True)
    assert torch.equal(_logits(out.hf), _logits(again.eval()))


def test_gpt2_heads_take_a_global_ranking_llama_refuses_it(gpt2_dir, llama_dir, tmp_path):
    hf, _ = load_hf_model(gpt2_dir)
    cfg = HeadsConfig(amount=0.5, importance="weight_norm", scope="global")
    out = prune_heads_hf(HFCausalLM(hf, 32), cfg, _ctx(tmp_path))
    assert sum(b.attn.num_heads for b in out.hf.transformer.h) == 4  # 8 heads, half removed across layers
    llama, _ = load_hf_model(llama_dir)
    with pytest.raises(UserError, match="scope: per_layer"):
        prune_heads_hf(HFCausalLM(llama, 32), cfg, _ctx(tmp_path))


@pytest.mark.parametrize("importance", ["taylor", "activation"])
def test_data_driven_scores_run_on_the_tokenized_train_split(
    gpt2_dir, byte_corpus, tiny_tokenizer, importance, tmp_path
):
    from edgescale.hf.tokens import tokenize_corpus

    hf, _ = load_hf_model(gpt2_dir)
    tc = tokenize_corpus(byte_corpus, tiny_tokenizer, 320)
    cfg = HeadsConfig(amount=0.5, importance=importance, calibration_batches=2, calibration_batch_size=2)
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    out = prune_heads_hf(HFCausalLM(hf, 32), cfg, _ctx(tmp_path, tc))
    assert [b.attn.num_heads for b in out.hf.transformer.h] == [2, 2]
    assert all(torch.equal(v, hf.state_dict()[k]) for k, v in before.items())  # input not modified


def test_recovery_moves_the_pruned_model_toward_its_parent(llama_dir, byte_corpus, tmp_path):
    """Distillation against the parent lowers KL(parent || pruned) on held-out text. A random
    model's logits are nearly flat (pruning it barely moves them), so the parent's LM head is
    scaled up first: peaked predictions that pruning visibly disturbs."""
    from edgescale.hf.recover import recover_hf
    from edgescale.hf.tokens import tokenize_corpus
    from edgescale.train.recover import RecoverConfig

    hf, _ = load_hf_model(llama_dir)
    with torch.no_grad():
        hf.lm_head.weight.mul_(30)
    parent = HFCausalLM(hf, 32)
    tc = tokenize_corpus(byte_corpus, None, 256)
    ids = torch.from_numpy(tc["validation"].tokens[:128].astype("int64").reshape(4, 32))
    pruned = prune_heads_hf(parent, HeadsConfig(amount=0.5, importance="weight_norm"), _ctx(tmp_path))
    pruned = prune_ffn_hf(pruned, FfnConfig(amount=0.5, importance="weight_norm"), _ctx(tmp_path))

    def kl(student) -> float:
        with torch.no_grad():
            p = parent.logits(ids).log_softmax(-1)
            q = student.logits(ids).log_softmax(-1)
        return float((p.exp() * (p - q)).sum(-1).mean())

    ctx = StepContext(tmp_path, log=lambda m: None, parent=parent, corpus=tc)
    recovered = recover_hf(pruned, RecoverConfig(tokens=2048, batch_size=4, alpha=1.0), ctx)
    assert kl(recovered) < 0.75 * kl(pruned)  # measured here: 0.247 -> 0.118
    assert ctx.metrics["tokens"] >= 2048
    with pytest.raises(UserError, match="needs tokens"):
        recover_hf(pruned, RecoverConfig(), ctx)
