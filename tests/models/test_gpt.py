import pytest
import torch

from edgescale.models.gpt import GPT, GPTConfig, accounting


def test_same_seed_same_weights_and_different_seed_differs(tiny_cfg):
    a, b, c = GPT(tiny_cfg, seed=1), GPT(tiny_cfg, seed=1), GPT(tiny_cfg, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_accounting_matches_the_module(tiny_cfg):
    model = GPT(tiny_cfg)
    acct = accounting(tiny_cfg, decode_context=64)
    assert acct.params_total == sum(p.numel() for p in model.parameters())
    emb = model.wte.weight.numel() + model.wpe.weight.numel()
    assert acct.params_non_embedding == acct.params_total - emb
    # Kaplan's 12·L·d² is the matrix part; biases and LayerNorms add a little.
    d, L = tiny_cfg.n_embd, tiny_cfg.n_layer
    assert 12 * L * d * d < acct.params_non_embedding < 12 * L * d * d * 1.1
    assert acct.kv_bytes_per_token_fp32 == 4 * 2 * L * d


def test_kv_cache_decoding_equals_full_forward(tiny_model):
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = tiny_model.logits(ids)
        logits, past = tiny_model(ids[:, :8])
        steps = [logits]
        for t in range(8, 12):
            pos = torch.full((2, 1), t)
            logits, past = tiny_model(ids[:, t : t + 1], pos, None, past)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_untied_head_counts_its_own_parameters():
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, tie_embeddings=False, block_size=32)
    assert accounting(cfg, 32).params_total == sum(p.numel() for p in GPT(cfg).parameters())


PRUNED = GPTConfig(n_layer=3, n_head=4, n_embd=32, block_size=32, layer_heads=(4, 1, 2), layer_ffn=(128, 7, 40))


def test_per_layer_shapes_build_the_stated_tensors_and_count_exactly():
    model = GPT(PRUNED)
    assert [b.attn.c_attn.weight.shape[0] for b in model.blocks] == [3 * 32, 3 * 8, 3 * 16]
    assert [b.mlp_proj.weight.shape[1] for b in model.blocks] == [128, 7, 40]
    for tie in (True, False):
        cfg = GPTConfig(**{**PRUNED.to_dict(), "tie_embeddings": tie})
        acct = accounting(cfg, 32)
        assert acct.params_total == sum(p.numel() for p in GPT(cfg).parameters())
    assert accounting(PRUNED, 32).kv_bytes_per_token_fp32 == 4 * 2 * (4 + 1 + 2) * 8


def test_unpruned_configs_keep_their_dict_and_pruned_ones_round_trip(tiny_cfg):
    # to_dict enters the cache keys of existing runs: it must not change for unpruned shapes
    assert tiny_cfg.to_dict() == {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "vocab_size": 256,
        "block_size": 64,
        "tie_embeddings": True,
    }
    same = GPTConfig(2, 2, 32, block_size=64, layer_heads=(2, 2), layer_ffn=[128, 128])
    assert same == tiny_cfg and same.to_dict() == tiny_cfg.to_dict()  # uniform = unpruned
    again = GPTConfig(**PRUNED.to_dict())
    assert again == PRUNED and again.layer_heads == (4, 1, 2) and hash(again) == hash(PRUNED)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"layer_heads": (2, 0)}, "at least 1"),
        ({"layer_ffn": (0, 4)}, "at least 1"),
        ({"layer_heads": (2,)}, "1 entries for n_layer=2"),
    ],
)
def test_a_layer_without_heads_or_channels_is_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        GPTConfig(n_layer=2, n_head=2, n_embd=32, **kwargs)


def test_kv_cache_decoding_equals_full_forward_with_per_layer_heads():
    model = GPT(PRUNED, seed=3).eval()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.logits(ids)
        logits, past = model(ids[:, :5])
        assert [k.shape[1] for k, _ in past] == [4, 1, 2]
        steps = [logits]
        for t in range(5, 12):
            logits, past = model(ids[:, t : t + 1], torch.full((2, 1), t), None, past)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
