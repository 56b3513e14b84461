"""The causality guard refuses a model that sees future tokens."""

import pytest
import torch
import torch.nn.functional as F

from edgescale.errors import CausalityError
from edgescale.export.onnx import export_onnx
from edgescale.guard import check_causal_onnx, check_causal_torch
from edgescale.models.gpt import GPT, CausalSelfAttention


class Bidirectional(CausalSelfAttention):
    """Attention without the causal mask: what a BERT-style encoder does."""

    def forward(self, x, mask, past):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y), (k, v)


def _bidirectional(cfg) -> GPT:
    model = GPT(cfg, seed=0)
    for block in model.blocks:
        attn = Bidirectional(cfg)
        attn.load_state_dict(block.attn.state_dict())
        block.attn = attn
    return model.eval()


def test_causal_model_passes(tiny_model):
    check_causal_torch(tiny_model)


def test_bidirectional_torch_model_is_refused(tiny_cfg):
    with pytest.raises(CausalityError, match="not causal"):
        check_causal_torch(_bidirectional(tiny_cfg), "bidir")


def test_bidirectional_onnx_model_is_refused(tiny_cfg, tiny_onnx, tmp_path):
    check_causal_onnx(tiny_onnx)
    path = export_onnx(_bidirectional(tiny_cfg), tmp_path / "bidir.onnx")
    with pytest.raises(CausalityError, match="bidir.onnx"):
        check_causal_onnx(path)
