import torch

from edgescale.models.gpt import GPT, GPTConfig, accounting


def test_same_seed_same_weights_and_different_seed_differs(tiny_cfg):
    a, b, c = GPT(tiny_cfg, seed=1), GPT(tiny_cfg, seed=1), GPT(tiny_cfg, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_accounting_matches_the_module(tiny_cfg):
    model = GPT(tiny_cfg)
    acct = accounting(tiny_cfg, n_ctx=64)
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
