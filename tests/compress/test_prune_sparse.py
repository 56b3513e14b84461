"""Magnitude and N:M sparsity: the zeros land where the method says, and survive recovery."""

import pytest
import torch
from pydantic import ValidationError

from edgescale.compress.prune_sparse import MagnitudeConfig, NMConfig, prune_magnitude, prune_nm, sparse_targets
from edgescale.compress.registry import StepContext
from edgescale.errors import UserError
from edgescale.models.gpt import GPT, GPTConfig

CFG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32)


@pytest.fixture(scope="module")
def model():
    return GPT(CFG, seed=0).eval()


@pytest.fixture
def ctx(tmp_path):
    return StepContext(tmp_path, log=lambda m: None)


def _weights(m):
    return {n: lin.weight.detach() for n, lin in sparse_targets(m).items()}


def _untouched(before, after):
    """Everything but the blocks' Linear weights is bit-identical."""
    targets = {f"{n}.weight" for n in sparse_targets(before)}
    other = [k for k in before.state_dict() if k not in targets]
    assert other and all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in other)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_per_layer_magnitude_zeroes_the_smallest_share_of_each_matrix(model, ctx, sparsity):
    out = prune_magnitude(model, MagnitudeConfig(sparsity=sparsity), ctx)
    for name, w in _weights(out).items():
        orig = _weights(model)[name]
        zero = w == 0
        assert zero.float().mean().item() == pytest.approx(sparsity, abs=1 / w.numel())
        assert orig[zero].abs().max() <= orig[~zero].abs().min()  # the zeros are the smallest |w|
        assert torch.equal(w[~zero], orig[~zero])
    assert ctx.metrics["sparsity"] == pytest.approx(sparsity, abs=1e-3)
    assert ctx.metrics["dense_kernel_speedup"] is False
    assert ctx.metrics["note"] == "no dense-kernel speedup on this runtime"
    assert ctx.metrics["params_total_after"] == ctx.metrics["params_total_before"]  # dense tensors, same size
    assert ctx.metrics["params_non_embedding_nonzero_after"] < ctx.metrics["params_non_embedding_after"]
    _untouched(model, out)


def test_global_magnitude_uses_one_threshold_over_all_matrices(model, ctx):
    out = prune_magnitude(model, MagnitudeConfig(sparsity=0.5, scope="global"), ctx)
    orig = torch.cat([w.reshape(-1) for w in _weights(model).values()])
    got = torch.cat([w.reshape(-1) for w in _weights(out).values()])
    zero = got == 0
    assert zero.float().mean().item() == pytest.approx(0.5, abs=1 / got.numel())
    assert orig[zero].abs().max() <= orig[~zero].abs().min()
    # GPT-2 init gives the residual projections smaller weights: a global threshold hits them harder
    shares = {n: (w == 0).float().mean().item() for n, w in _weights(out).items()}
    assert shares["blocks.0.mlp_proj"] > shares["blocks.0.mlp_fc"]
    _untouched(model, out)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_nm_pattern_holds_in_every_group_and_keeps_the_largest(model, ctx, n, m):
    out = prune_nm(model, NMConfig(n=n, m=m), ctx)
    for name, w in _weights(out).items():
        groups = w.reshape(w.shape[0], -1, m)  # runs of m along the input dimension
        orig = _weights(model)[name].reshape(groups.shape)
        assert ((groups != 0).sum(-1) == n).all(), name  # exactly n kept in every group
        kept_min = torch.where(groups != 0, orig.abs(), torch.inf).min(-1).values
        dropped_max = torch.where(groups == 0, orig.abs(), -torch.inf).max(-1).values
        assert (dropped_max <= kept_min).all(), name
    assert ctx.metrics["sparsity"] == pytest.approx(1 - n / m)
    assert ctx.metrics["pattern"] == f"{n}:{m}" and ctx.metrics["dense_kernel_speedup"] is False
    _untouched(model, out)


def test_nm_refuses_bad_patterns_by_field(model, ctx):
    with pytest.raises(ValidationError, match="must be smaller than m"):
        NMConfig(n=4, m=4)
    with pytest.raises(UserError, match="not a multiple of m=3") as e:
        prune_nm(model, NMConfig(n=1, m=3), ctx)
    assert e.value.field == "m"


@pytest.mark.parametrize(
    "step", [lambda m, c: prune_nm(m, NMConfig(), c), lambda m, c: prune_magnitude(m, MagnitudeConfig(), c)]
)
def test_same_input_same_weights_and_input_untouched(model, ctx, step):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = step(model, ctx), step(model, ctx)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_recovery_keeps_the_zeros(model, ctx, corpus):
    """Masked fine-tuning: distill.recover re-applies the 2:4 pattern after every optimizer step."""
    from edgescale.train.recover import RecoverConfig, recover, zero_masks

    assert zero_masks(model) == {}  # a dense model trains unmasked
    sparse = prune_nm(model, NMConfig(), ctx)
    c = StepContext(ctx.work_dir, log=lambda m: None, parent=model, parent_tokens=10**6, corpus=corpus)
    healed = recover(sparse, RecoverConfig(tokens=4 * 8 * 32, batch_size=8, learning_rate=1e-2), c)
    for name, w in _weights(healed).items():
        before = _weights(sparse)[name]
        assert torch.equal(w == 0, before == 0), name  # same zeros, in the same places
        assert not torch.equal(w, before), name  # and the rest was trained
    assert c.metrics["masked_zeros_kept"] == c.metrics["masked_zeros"] > 0
    (ctx.work_dir / "plain").mkdir()
    c = StepContext(ctx.work_dir / "plain", log=lambda m: None, parent=model, parent_tokens=10**6, corpus=corpus)
    unmasked = recover(sparse, RecoverConfig(tokens=4 * 8 * 32, batch_size=8, keep_zeros=False), c)
    assert (unmasked.blocks[0].mlp_fc.weight != 0).all()  # without the mask, AdamW fills the zeros
