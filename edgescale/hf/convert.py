"""An edgescale GPT as a transformers ``GPT2LMHeadModel``, with identical outputs.

The two are the same architecture: pre-LayerNorm blocks (eps 1e-5), fused q/k/v
projection split in that order, ``1/sqrt(head_dim)`` attention, a 4x MLP, learned
positions, LM head tied to the token table. The differences are representational:
GPT-2's ``Conv1D`` stores each weight transposed, (in, out), where ``nn.Linear`` stores
(out, in); edgescale's MLP uses the exact (erf) GELU, which is GPT-2's
``activation_function: gelu`` (its default ``gelu_new`` is the tanh approximation).
Head-pruned layers become transformers' ``pruned_heads`` (the removed heads are named
as the last ones: edgescale's rebuilt model keeps no original numbering). The FFN width
must be the same in every layer (GPT-2's ``n_inner``).

Used by ``benchmarks/optimum_parity.py`` to export one model through both exporters,
and useful on its own: a trained edgescale model saved with ``save_pretrained`` is a
Hugging Face checkpoint.
"""

from __future__ import annotations

import torch

from edgescale.errors import UserError
from edgescale.models.gpt import GPT


def gpt_to_hf(model: GPT):
    """The same network as a ``GPT2LMHeadModel`` (float32, eval mode)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.cfg
    if len(set(c.ffn_per_layer)) != 1:
        raise UserError(
            f"GPT-2 has one FFN width for all layers; this model has {list(c.ffn_per_layer)}", field="model"
        )
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.ffn_per_layer[0],
        activation_function="gelu",  # exact erf GELU, as torch.nn.functional.gelu
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=c.tie_embeddings,
        pruned_heads={i: list(range(h, c.n_head)) for i, h in enumerate(c.heads_per_layer) if h < c.n_head},
    )
    src = model.state_dict()
    state = {
        "transformer.wte.weight": src["wte.weight"],
        "transformer.wpe.weight": src["wpe.weight"],
        "transformer.ln_f.weight": src["ln_f.weight"],
        "transformer.ln_f.bias": src["ln_f.bias"],
        "lm_head.weight": src["lm_head.weight"],
    }
    names = {  # edgescale name -> (GPT-2 name, Linear weight to transpose into Conv1D)
        "ln_1.weight": ("ln_1.weight", False),
        "ln_1.bias": ("ln_1.bias", False),
        "ln_2.weight": ("ln_2.weight", False),
        "ln_2.bias": ("ln_2.bias", False),
        "attn.c_attn.weight": ("attn.c_attn.weight", True),
        "attn.c_attn.bias": ("attn.c_attn.bias", False),
        "attn.c_proj.weight": ("attn.c_proj.weight", True),
        "attn.c_proj.bias": ("attn.c_proj.bias", False),
        "mlp_fc.weight": ("mlp.c_fc.weight", True),
        "mlp_fc.bias": ("mlp.c_fc.bias", False),
        "mlp_proj.weight": ("mlp.c_proj.weight", True),
        "mlp_proj.bias": ("mlp.c_proj.bias", False),
    }
    for i in range(c.n_layer):
        for ours, (theirs, transpose) in names.items():
            t = src[f"blocks.{i}.{ours}"]
            state[f"transformer.h.{i}.{theirs}"] = t.T.contiguous() if transpose else t
    out = GPT2LMHeadModel(config)
    missing, unexpected = out.load_state_dict(state, strict=False)
    # GPT-2 keeps a causal-mask buffer per layer in some versions; nothing else may be missing.
    if [k for k in missing if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")] or unexpected:
        raise RuntimeError(f"GPT → GPT-2 conversion left missing {missing[:3]}, unexpected {unexpected[:3]}")
    return out.float().eval()


@torch.no_grad()
def max_logit_difference(model: GPT, hf_model, ids: torch.Tensor) -> float:
    """max |logits(edgescale) − logits(transformers)| on ``ids`` (B, T)."""
    return float((model.logits(ids) - hf_model(input_ids=ids, use_cache=False).logits).abs().max())
