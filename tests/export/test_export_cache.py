"""The export cache writes, byte for byte, what a fresh export writes, and never serves a graph
whose weights it cannot rebuild."""

from __future__ import annotations

import pytest
import torch

from edgescale.export import cache
from edgescale.export import onnx as exporter
from edgescale.export.onnx import export_onnx
from edgescale.models.gpt import GPT, GPTConfig

TIED = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)
PRUNED = GPTConfig(
    n_layer=2, n_head=2, n_embd=32, block_size=64, tie_embeddings=False, layer_heads=(1, 2), layer_ffn=(64, 96)
)
# A tied head too large for the exporter's own constant folding: edgescale's fold transposes it.
WIDE = GPTConfig(n_layer=1, n_head=2, n_embd=256, block_size=32)


def _trained(cfg: GPTConfig, seed: int) -> GPT:
    """A model whose every tensor holds distinct values, as after training (a fresh one has
    LayerNorm ones and zero biases, which the exporter merges into one initializer each)."""
    model = GPT(cfg, seed=seed)
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    return model.eval()


def _fresh_init(cfg: GPTConfig, seed: int) -> GPT:
    return GPT(cfg, seed=seed).eval()


def _fp(model: GPT, opset: int = 18) -> cache.Fingerprint:
    return cache.fingerprint(model, opset, exporter.__file__)


def _fresh(model: GPT, path) -> bytes:
    """A fresh export: the cache answers that no key caches."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "load", lambda key: False)
        return export_onnx(model, path).read_bytes()


@pytest.mark.parametrize(
    ("cfg", "make"),
    [(PRUNED, _trained), (WIDE, _fresh_init)],
    ids=["untied-pruned", "tied-folded-head-merged-initializers"],  # a trained GPT; a fresh one
)
def test_cached_exports_are_byte_identical_to_fresh_ones(cfg, make, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESCALE_CACHE", str(tmp_path / "cache"))
    folds = []
    fold = exporter._fold_constant_transposes
    monkeypatch.setattr(exporter, "_fold_constant_transposes", lambda path: folds.append(fold(path)) or folds[-1])
    a, b, c = (make(cfg, seed) for seed in range(3))
    key = _fp(a).key
    assert _fp(b).key == _fp(c).key == key
    draws = []
    for name in ("cold", "warm"):  # the first traces and keeps a candidate, the second is served from it
        torch.manual_seed(7)
        export_onnx(a, tmp_path / f"{name}.onnx")
        draws.append(torch.rand(4))  # a hit draws the example inputs as an export does
    assert torch.equal(*draws)
    cold = (tmp_path / "cold.onnx").read_bytes()
    assert (tmp_path / "warm.onnx").read_bytes() == cold
    assert cache.load(key).proven is False
    export_onnx(b, tmp_path / "b.onnx")  # other weights: traced afresh, and proves the candidate
    assert cache.load(key).proven is True
    warm_c = export_onnx(c, tmp_path / "c.onnx").read_bytes()  # served
    assert warm_c != cold
    assert warm_c == _fresh(c, tmp_path / "fresh_c.onnx")
    assert len(folds) == 3 and bool(folds[0]) == cfg.tie_embeddings  # the traces: a, b and the fresh c


def test_key_follows_shape_opset_and_weight_structure():
    model = _trained(TIED, 0)
    key = _fp(model).key
    assert _fp(model, opset=19).key != key
    assert _fp(_trained(PRUNED, 0)).key != key
    assert _fp(_fresh_init(TIED, 0)).key != key  # its LayerNorms and biases are merged and uniform
    with torch.no_grad():
        model.blocks[1].ln_1.bias.copy_(model.blocks[0].ln_1.bias)  # equal tensors: merged by the exporter
    assert _fp(model).key != key
    with torch.no_grad():
        model.blocks[1].ln_1.bias.fill_(0.5)  # a uniform tensor: its value is part of the key
    uniform = _fp(model).key
    with torch.no_grad():
        model.blocks[1].ln_1.bias.fill_(0.25)
    assert _fp(model).key != uniform


def test_a_candidate_that_fails_its_proof_is_not_cached(tmp_path, monkeypatch):
    """Without the transposed copies the exporter's folded weights would be served stale: the
    next export with other weights catches it, and the key is marked so its exports stay fresh."""
    monkeypatch.setenv("EDGESCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_copies", lambda state: {})
    a, b = _trained(TIED, 0), _trained(TIED, 1)
    export_onnx(a, tmp_path / "a.onnx")
    assert cache.load(_fp(a).key).proven is False
    export_onnx(b, tmp_path / "b.onnx")
    assert cache.load(_fp(a).key) is False


def test_a_candidate_is_not_proven_by_weights_it_shares():
    """A fresh export that leaves some tensor as the candidate had it does not test that tensor's slots."""
    a, b = _trained(TIED, 0), _trained(TIED, 1)
    with torch.no_grad():
        b.blocks[0].mlp_fc.weight.copy_(a.blocks[0].mlp_fc.weight)
    candidate = cache.Entry(graph=None, slots=(), proven=False, digests=_fp(a).digests)
    assert not candidate.proven_by(_fp(b))
    assert candidate.proven_by(_fp(_trained(TIED, 2)))
    assert candidate.serves(_fp(a)) and not candidate.serves(_fp(b))


def test_other_modules_and_weights_are_not_cached():
    class Sub(GPT):
        pass

    assert _fp(Sub(TIED)) is None
    assert _fp(GPT(TIED).half()) is None
    # a stock GPT with a module swapped in (an attention without its causal mask) or a patched forward
    swapped = GPT(TIED)
    swapped.blocks[0].attn = type("Bidirectional", (torch.nn.Module,), {"forward": lambda self, x: x})()
    assert _fp(swapped) is None
    patched = GPT(TIED)
    patched.blocks[0].mlp_fc.forward = lambda x: x
    assert _fp(patched) is None and _fp(GPT(TIED)) is not None
