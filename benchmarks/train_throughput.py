"""Training throughput: edgescale's loop against a plain nanoGPT-style reference loop.

    .venv/bin/python benchmarks/train_throughput.py [--n-layer 4 --n-embd 96 --batch 32 --rounds 8]

Both loops train the same GPT shape with AdamW (no compilation), the same threads,
batch and context. They run interleaved — a chunk of steps of one, then of the other,
for several rounds — so machine drift hits both alike. Printed: tokens/s per loop
(median and range over rounds), the ratio edgescale / reference per round (median and
range), and model-FLOPs utilisation against this machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from edgescale.config import CorpusConfig, TrainingConfig
from edgescale.data.corpus import load_corpus
from edgescale.models.gpt import GPT, GPTConfig, accounting
from edgescale.train.trainer import _optimizer, _Run, _sgd_step


def reference_loop(model: GPT, data: torch.Tensor, steps: int, batch: int, block: int, gen: torch.Generator):
    """nanoGPT's train.py inner loop on CPU: random windows, forward, backward, clip, AdamW."""
    opt = reference_loop.opt
    for _ in range(steps):
        ix = torch.randint(len(data) - block - 1, (batch,), generator=gen)
        x = torch.stack([data[i : i + block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + block] for i in ix])
        logits = model.logits(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def matmul_peak_flops(threads: int, n: int = 1024, repeats: int = 20) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=96)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15, help="steps per chunk")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = GPTConfig(args.n_layer, args.n_head, args.n_embd, block_size=args.block)
    corpus = load_corpus(CorpusConfig())
    tc = TrainingConfig(batch_size=args.batch, threads=args.threads)
    per_step = args.batch * args.block

    ours = GPT(cfg, seed=0).train()
    run = _Run(cfg, tc, corpus, 0, per_step, None, 10**9)
    our_opt = _optimizer(ours, tc)
    ref = GPT(cfg, seed=0).train()
    reference_loop.opt = torch.optim.AdamW(ref.parameters(), lr=tc.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.from_numpy(corpus["train"].tokens.astype("int64"))
    gen = torch.Generator().manual_seed(0)

    rates: dict[str, list[float]] = {"edgescale": [], "reference": []}
    step = 0
    for r in range(args.rounds + 1):  # round 0 warms up both
        order = ("edgescale", "reference") if r % 2 else ("reference", "edgescale")
        for name in order:
            t = time.perf_counter()
            if name == "edgescale":
                for _ in range(args.steps):
                    _sgd_step(run, ours, our_opt, step, tc.learning_rate)
                    step += 1
            else:
                reference_loop(ref, data, args.steps, args.batch, args.block, gen)
            if r:
                rates[name].append(args.steps * per_step / (time.perf_counter() - t))
    ratios = [a / b for a, b in zip(rates["edgescale"], rates["reference"], strict=True)]
    peak = matmul_peak_flops(args.threads)
    acct = accounting(cfg, args.block)
    train_flops_per_token = 3 * acct.flops_per_token_exact  # forward + backward (2x forward)

    table = Table(
        title=f"training throughput · {args.n_layer}×{args.n_embd} GPT, batch {args.batch}×{args.block}, "
        f"{args.threads} threads, {args.rounds} interleaved rounds of {args.steps} steps"
    )
    for col in ("loop", "tokens/s median", "min", "max", "MFU vs matmul peak"):
        table.add_column(col, justify="left" if col == "loop" else "right")
    for name, rs in rates.items():
        med = statistics.median(rs)
        table.add_row(
            name, f"{med:,.0f}", f"{min(rs):,.0f}", f"{max(rs):,.0f}", f"{med * train_flops_per_token / peak:.1%}"
        )
    Console(width=140).print(table)
    print(
        f"ratio edgescale / reference: median {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}–{max(ratios):.3f} over {len(ratios)} rounds)"
    )
    print(
        f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({args.threads} threads, 1024×1024); "
        f"training FLOPs/token {train_flops_per_token:,.0f} (3 × exact forward at context {args.block})"
    )


if __name__ == "__main__":
    main()
