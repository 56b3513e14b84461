"""Training throughput: edgescale's loop against a plain nanoGPT-style reference loop.

    .venv/bin/python benchmarks/train_throughput.py [--n-layer 4 --n-embd 96 --batch 32 --rounds 8]
    .venv/bin/python benchmarks/train_throughput.py --device cuda --params 50e6 --block 1024 --batch 16 [--compile]

Both loops train the same GPT shape with AdamW, the same threads, batch, context and device
setup (edgescale.train.device: bf16 autocast, TF32 and fused AdamW on CUDA; fp32 on CPU;
``--compile`` compiles both forwards). ``--params N`` picks the shape whose non-embedding count
is closest to N (edgescale.models.shape.shape_for_params). They run interleaved — a chunk of
steps of one, then of the other, for several rounds — so machine drift hits both alike.
Printed: tokens/s per loop (median and range over rounds), the ratio edgescale / reference
per round, and MFU against the device's peak (edgescale.train.device.device_peak: a GPU's
dense bf16 datasheet peak, the CPU's measured fp32 matmul peak), naming the peak's source.

Model FLOPs per token = 6·N + 12·L·T·d (Chowdhery et al. 2022, "PaLM", arXiv:2204.02311,
Appendix B): N the parameters that multiply (non-embedding plus the LM head), L layers, T
the context, d the width; attention counted in full, as PaLM does.
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
from edgescale.models.shape import shape_for_params
from edgescale.train.device import autocast, configured, device_peak, device_setup, to_device
from edgescale.train.trainer import _optimizer, _Run, _sgd_step


def reference_loop(model, data: torch.Tensor, steps: int, batch: int, block: int, gen: torch.Generator, setup):
    """nanoGPT's train.py inner loop: random windows (pinned, non_blocking on CUDA), forward and
    loss under the device's autocast, backward, clip, AdamW."""
    opt = reference_loop.opt
    for _ in range(steps):
        ix = torch.randint(len(data) - block - 1, (batch,), generator=gen)
        x = to_device(torch.stack([data[i : i + block] for i in ix]), setup)
        y = to_device(torch.stack([data[i + 1 : i + 1 + block] for i in ix]), setup)
        with autocast(setup):
            logits = reference_loop.forward(x)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def palm_flops_per_token(cfg: GPTConfig, block: int) -> float:
    """6·N + 12·L·T·d (PaLM, Appendix B), N = non-embedding parameters + the LM head's V·d."""
    n = accounting(cfg, block).params_non_embedding + cfg.vocab_size * cfg.n_embd
    return 6 * n + 12 * cfg.n_layer * block * cfg.n_embd


def _sync(setup) -> None:
    if setup.device == "cuda":
        torch.cuda.synchronize()  # the GPU runs ahead of the host: time what it finished


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
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="as training.device")
    ap.add_argument("--params", type=float, default=None, help="target non-embedding parameters (e.g. 50e6)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both loops' forward (inductor)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.params:
        shape = shape_for_params(args.params, block_size=args.block)
        args.n_layer, args.n_head, args.n_embd = shape.n_layer, shape.n_head, shape.n_embd
    cfg = GPTConfig(args.n_layer, args.n_head, args.n_embd, block_size=args.block)
    corpus = load_corpus(CorpusConfig())
    tc = TrainingConfig(batch_size=args.batch, threads=args.threads, device=args.device, compile=args.compile)
    setup = device_setup(tc)
    per_step = args.batch * args.block
    with configured(setup):
        rates = _measure(args, cfg, corpus, tc, setup, per_step)
    _report(args, cfg, setup, rates)


def _measure(args, cfg: GPTConfig, corpus, tc: TrainingConfig, setup, per_step: int) -> dict[str, list[float]]:
    ours = GPT(cfg, seed=0).to(setup.device).train()
    run = _Run(cfg, tc, corpus, 0, per_step, None, 10**9, setup=setup)
    our_opt = _optimizer(ours, tc, fused=setup.fused_adamw)
    ref = GPT(cfg, seed=0).to(setup.device).train()
    reference_loop.forward = torch.compile(ref.logits) if setup.compile else ref.logits
    reference_loop.opt = torch.optim.AdamW(
        ref.parameters(), lr=tc.learning_rate, betas=(0.9, 0.95), weight_decay=0.1, fused=setup.fused_adamw
    )
    data = torch.from_numpy(corpus["train"].tokens.astype("int64"))
    gen = torch.Generator().manual_seed(0)

    rates: dict[str, list[float]] = {"edgescale": [], "reference": []}
    step = 0
    for r in range(args.rounds + 1):  # round 0 warms up both
        order = ("edgescale", "reference") if r % 2 else ("reference", "edgescale")
        for name in order:
            _sync(setup)
            t = time.perf_counter()
            if name == "edgescale":
                for _ in range(args.steps):
                    _sgd_step(run, ours, our_opt, step, tc.learning_rate)
                    step += 1
            else:
                reference_loop(ref, data, args.steps, args.batch, args.block, gen, setup)
            _sync(setup)
            if r:
                rates[name].append(args.steps * per_step / (time.perf_counter() - t))
    return rates


def _report(args, cfg: GPTConfig, setup, rates: dict[str, list[float]]) -> None:
    ratios = [a / b for a, b in zip(rates["edgescale"], rates["reference"], strict=True)]
    peak, what, source = device_peak(setup.device)
    train_flops_per_token = palm_flops_per_token(cfg, args.block)
    n = accounting(cfg, args.block).params_non_embedding
    precision = setup.autocast_dtype or "fp32"
    table = Table(
        title=f"training throughput · {args.n_layer}×{args.n_embd} GPT ({n / 1e6:.2f}M non-embedding), "
        f"batch {args.batch}×{args.block}, {setup.device} {precision}{' compiled' if setup.compile else ''}, "
        f"{args.threads} threads, {args.rounds} interleaved rounds of {args.steps} steps"
    )
    for col in ("loop", "tokens/s median", "min", "max", "MFU"):
        table.add_column(col, justify="left" if col == "loop" else "right")
    for name, rs in rates.items():
        med = statistics.median(rs)
        mfu = f"{med * train_flops_per_token / peak:.1%}" if peak else "unknown peak"
        table.add_row(name, f"{med:,.0f}", f"{min(rs):,.0f}", f"{max(rs):,.0f}", mfu)
    Console(width=140).print(table)
    print(
        f"ratio edgescale / reference: median {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}–{max(ratios):.3f} over {len(ratios)} rounds)"
    )
    shown = f"{peak / 1e12:,.2f} TFLOP/s" if peak else "none"
    print(f"peak: {shown} — {what}; source: {source}")
    print(f"training FLOPs/token {train_flops_per_token:,.0f} (6N + 12·L·T·d, PaLM appendix B, T = {args.block})")


if __name__ == "__main__":
    main()
