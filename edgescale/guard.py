"""Causality guard: the logits at positions <= t must not depend on tokens after t.

A model that peeks ahead (bidirectional attention, a mask bug, a label leak) scores a
fake-low held-out loss, so every model entering the pipeline is checked strictly — the
torch model after training and its exported float graph.

That check alone judges a model by its current weights: a model whose logits barely depend
on its input yet (briefly trained, collapsed, at an unlucky scale) moves them by next to
nothing whatever it attends to, so a bidirectional architecture passes it and is only
caught, if at all, once trained longer. :func:`check_torch_model` therefore also judges
the *architecture*: the same spec built fresh at several seeds, where random weights make
every path carry signal, scored by a scale-free measure — the change a future token makes
at positions <= t *relative to* the change it makes at positions > t (which legitimately
see it). A model whose logits do not depend on its input at all cannot be judged that way
and is refused as such rather than passed. Both the torch model and the exported float
graph (:func:`check_onnx_graph`) are also checked for batch independence: changing one
sequence of a batch must not move another's logits (a ``layout`` mix-up in a user's
module attends across the batch instead of across time, and with a batch of one that is
invisible to the causality check).

A graph made by ONNX-stage steps is judged by what could make it leak. The one mechanism
by which a causal architecture's prefill logits can depend on later tokens is an
activation scale computed at run time over the whole call (onnxruntime's dynamic
quantization: ``DynamicQuantizeLinear``, ``DynamicQuantizeMatMul``; one scale per tensor,
over every position and every sequence of the batch). Static scales, fp16, 4-bit weights
(``MatMulNBits`` quantizes its input per row) and graph fusions have none, so a graph
without such an op is checked exactly as strictly as the float export: any leak there is
breakage. A graph with one leaks by construction, by an amount that depends on the
model's activations (0.6–5.5% of the legitimate change on a 2-layer model, 0.165 logits on
a 409M Llama), so no tolerance on logits separates it from a real leak. Its influence is
recorded, not refused; what it does to the loss is measured by
:func:`edgescale.bench.leak.measure_leak` and reported with the loss. Only gross breakage
is refused (``GROSS_RATIO``): earlier positions moving *more* than the positions that see
the changed tokens. A scale change moves every position by the same rounding, and the
positions after the change move by that plus the change itself, so a ratio above 1 cannot
come from scales unless the graph's quantization noise is as large as its signal, which
is breakage either way. A future-attending architecture is caught before this, strictly,
on the float export and at initialization. Decoding through the KV cache, one token per
call, has no such effect.

:func:`edgescale.onnx_probe.probe_onnx` opens an untrusted ONNX file (one a user hands to
``validate``, ``export`` or ``predict``) in a child process first, with a timeout, so a native
crash or a hang inside onnxruntime becomes one error naming the file instead of taking
edgescale down.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.errors import CausalityError

LogitsFn = Callable[[np.ndarray], np.ndarray]


def check_causal(
    logits_fn: LogitsFn, vocab_size: int, what: str, *, length: int = 24, seed: int = 0, atol: float = 1e-4
) -> float:
    """Raise :class:`CausalityError` if changing tokens after t changes logits at <= t by
    more than ``atol`` (relative to the largest logit); return the largest relative change."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(1, length), dtype=np.int64)
    base = np.asarray(logits_fn(ids), dtype=np.float64)
    scale = max(1.0, float(np.abs(base).max()))
    worst = 0.0
    for t in (0, length // 3, length // 2, length - 2):
        changed = ids.copy()
        changed[0, t + 1 :] = (changed[0, t + 1 :] + rng.integers(1, vocab_size, size=length - t - 1)) % vocab_size
        other = np.asarray(logits_fn(changed), dtype=np.float64)
        diff = float(np.abs(other[0, : t + 1] - base[0, : t + 1]).max())
        worst = max(worst, diff / scale)
        if diff > atol * scale:
            raise CausalityError(
                f"not causal: changing tokens after position {t} changed the logits at positions <= {t} "
                f"by {diff:.3g}; a model that sees future tokens would report a fake-low loss",
                file=what,
            )
    return worst


def check_causal_torch(model, what: str = "model") -> float:
    import torch

    def fn(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.logits(torch.from_numpy(ids)).numpy()

    spec = model.cfg if hasattr(model, "cfg") else model.spec
    return check_causal(fn, spec.vocab_size, what, length=min(24, spec.block_size))


def check_causal_onnx(path: Path, *, atol: float = 1e-4, length: int = 24) -> float:
    """Same check through onnxruntime, on a batched prefill."""
    lm = OrtCausalLM(path)
    vocab = lm.session.get_outputs()[0].shape[-1]
    return check_causal(lm.logits, vocab if isinstance(vocab, int) else 256, str(path), atol=atol, length=length)


# The scale-free measures below: a change counts only above float noise (NOISE of the
# largest logit), a model is judgeable only where its logits depend on its input well above
# that noise (JUDGEABLE), and a leak is refused when it is more than LEAK_RTOL of the change
# the input legitimately makes. A causal float model leaks exactly 0; a bidirectional one at
# initialization leaks tens of percent, a briefly trained one several percent.
NOISE = 1e-5
JUDGEABLE = 1e-4
LEAK_RTOL = 1e-2
INIT_SEEDS = (0, 1, 2)
EMBED_GAIN = 10.0  # at init, embeddings this much larger when the logits barely depend on the input


@dataclass(frozen=True)
class Dependence:
    """How much a change to the input moved logits it may not reach (``leak``) and logits it may (``own``)."""

    leak: float
    own: float
    scale: float  # the largest |logit| seen

    @property
    def judgeable(self) -> bool:
        return self.own > JUDGEABLE * self.scale

    @property
    def ratio(self) -> float:
        return self.leak / self.own if self.leak > NOISE * self.scale else 0.0


def _changed(rng: np.random.Generator, ids: np.ndarray, vocab: int) -> np.ndarray:
    return (ids + rng.integers(1, vocab, size=ids.shape)) % vocab  # every token different


def future_dependence(logits_fn: LogitsFn, vocab: int, *, length: int, sequences: int = 3, seed: int = 0) -> Dependence:
    """Change the tokens after t (several cut points, several random sequences) and compare
    the largest change at positions <= t (a leak) with the largest at positions > t."""
    rng = np.random.default_rng(seed)
    leak = own = scale = 0.0
    for _ in range(sequences):
        ids = rng.integers(0, vocab, size=(1, length), dtype=np.int64)
        base = np.asarray(logits_fn(ids), dtype=np.float64)
        scale = max(scale, float(np.abs(base).max()))
        for t in sorted({0, length // 3, length // 2, length - 2}):
            changed = ids.copy()
            changed[0, t + 1 :] = _changed(rng, ids[0, t + 1 :], vocab)
            diff = np.abs(np.asarray(logits_fn(changed), dtype=np.float64) - base)[0]
            leak, own = max(leak, float(diff[: t + 1].max())), max(own, float(diff[t + 1 :].max()))
    return Dependence(leak, own, scale)


def batch_dependence(logits_fn: LogitsFn, vocab: int, *, length: int, batch: int = 3, seed: int = 0) -> Dependence:
    """Change every token of one sequence in a batch; compare the largest change in the other
    sequences' logits (a leak) with the largest in its own."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, length), dtype=np.int64)
    base = np.asarray(logits_fn(ids), dtype=np.float64)
    changed = ids.copy()
    changed[1] = _changed(rng, ids[1], vocab)
    diff = np.abs(np.asarray(logits_fn(changed), dtype=np.float64) - base)
    others = [i for i in range(batch) if i != 1]
    return Dependence(float(diff[others].max()), float(diff[1].max()), float(np.abs(base).max()))


def refuse_future_leak(dep: Dependence, what: str) -> None:
    if dep.ratio > LEAK_RTOL:
        raise CausalityError(
            f"not causal: changing tokens after position t changed the logits at positions <= t by {dep.leak:.3g}, "
            f"{dep.ratio:.1%} of the change at positions > t ({dep.own:.3g}); the architecture sees future tokens, "
            "so its loss would be fake-low",
            file=what,
        )


def refuse_batch_leak(dep: Dependence, what: str, *, atol: float | None = None) -> None:
    """Refuse a leak across the batch: relative to the sequence's own change, or with ``atol``
    relative to the largest logit (graphs whose dynamic quantization scales span the batch)."""
    if atol is None and dep.ratio <= LEAK_RTOL or atol is not None and dep.leak <= atol * max(1.0, dep.scale):
        return
    raise CausalityError(
        f"not batch-independent: changing one sequence of a batch changed the other sequences' logits by "
        f"{dep.leak:.3g} ({dep.leak / max(dep.own, 1e-30):.1%} of the change in its own); the model mixes sequences "
        "across the batch (a user module's `layout` set to batch_first for a (T, B, C) module, or the reverse?)",
        file=what,
    )


def refuse_unjudgeable(dep: Dependence, what: str) -> None:
    if not dep.judgeable:
        raise CausalityError(
            f"cannot judge causality: the logits barely depend on the input (largest change {dep.own:.3g} "
            f"against logits up to {dep.scale:.3g}); a model whose outputs ignore its input is refused, not passed",
            file=what,
        )


def _torch_logits(model) -> LogitsFn:
    import torch

    def fn(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.logits(torch.from_numpy(ids)).float().numpy()

    return fn


def _at_init(model, seed: int, gain: float):
    """The model's spec built fresh (every edgescale torch model is ``Class(spec, seed=...)``,
    as :func:`edgescale.models.checkpoint.build_model` builds it), embeddings scaled by ``gain``."""
    import torch

    fresh = type(model)(model.spec, seed=seed).eval()
    with torch.no_grad():
        for m in fresh.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.mul_(gain)
    return fresh


def check_architecture_torch(model, what: str = "model", seeds: tuple[int, ...] = INIT_SEEDS) -> None:
    """Judge the architecture, not the weights: the causality and batch checks on the model's
    spec built fresh at several ``seeds``.

    Principle: at initialization nothing has collapsed or been trained towards constant
    outputs, so every path the architecture has (attention to future positions, to other
    sequences) carries signal, and the leak is measured relative to the change the input
    legitimately makes, so the logits' scale does not matter. Where a seed's logits barely
    depend on the input, its embeddings are scaled up by ``EMBED_GAIN`` and it is tried once
    more; if no seed can be judged the model is refused as unjudgeable. The global torch
    random state (the user's module initialises from it) is restored afterwards.
    """
    import torch

    spec = model.spec
    length = min(24, spec.block_size)
    judged = None
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            for gain in (1.0, EMBED_GAIN):
                fn = _torch_logits(_at_init(model, seed, gain))
                dep = future_dependence(fn, spec.vocab_size, length=length, seed=seed)
                if dep.judgeable:
                    break
            label = f"{what} at initialization (seed {seed})"
            if dep.judgeable:
                judged = dep
                refuse_future_leak(dep, label)
                refuse_batch_leak(batch_dependence(fn, spec.vocab_size, length=length, seed=seed), label)
    if judged is None:
        refuse_unjudgeable(dep, f"{what} at initialization")


def check_torch_model(model, what: str = "model") -> float:
    """Every check of a trained torch model: :func:`check_causal_torch` on its weights, the
    architecture at initialization (:func:`check_architecture_torch`), and the trained weights
    again by the scale-free measures where their logits depend on the input. Returns the first's value."""
    worst = check_causal_torch(model, what)
    check_architecture_torch(model, what)
    spec, fn = model.spec, _torch_logits(model)
    length = min(24, spec.block_size)
    dep = future_dependence(fn, spec.vocab_size, length=length)
    if dep.judgeable:
        refuse_future_leak(dep, what)
    batch = batch_dependence(fn, spec.vocab_size, length=length)
    if batch.judgeable:
        refuse_batch_leak(batch, what)
    return worst


def _takes_batches(lm: OrtCausalLM) -> bool:
    dim = (lm.session.get_inputs()[0].shape or [None])[0]
    return not isinstance(dim, int) or dim > 1


# Ops whose activation scale is computed at run time over the whole call (see the module docstring).
DYNAMIC_SCALE_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})
STRICT_ATOL = 1e-4  # a graph without dynamic scales: float noise only (the float export's tolerance)
GROSS_RATIO = 1.0  # a dynamically scaled graph's leak, relative to the legitimate change, refused above this


def dynamic_scale_ops(path: Path) -> frozenset[str]:
    """The ops of ``path`` (subgraphs and local functions included) that compute activation scales per call."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops: set[str] = set()
    graphs = [model.graph]
    while graphs:
        for node in graphs.pop().node:
            ops.add(node.op_type)
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            graphs += [g for a in node.attribute for g in a.graphs]
    ops.update(node.op_type for f in model.functions for node in f.node)
    return frozenset(ops & DYNAMIC_SCALE_OPS)


def refuse_gross_leak(dep: Dependence, what: str, across: str) -> None:
    """Refuse a dynamically scaled graph whose leak exceeds ``GROSS_RATIO`` of the legitimate change."""
    if dep.ratio > GROSS_RATIO:
        raise CausalityError(
            f"not causal: changing {across} moved logits it may not reach by {dep.leak:.3g}, {dep.ratio:.0%} of the "
            f"change where it may ({dep.own:.3g}); dynamic activation scales move every position alike and cannot "
            "explain that, so the graph is broken",
            file=what,
        )


def check_onnx_graph(path: Path, *, strict: bool, atol: float = STRICT_ATOL, length: int = 24) -> float:
    """Every check of a graph about to be scored; returns the largest change a future token
    made at earlier positions, relative to the largest logit (:func:`check_causal`'s measure).

    A strict graph (the exported float one), and any graph without a dynamic-scale op, is
    refused for a future change above ``atol`` of the largest logit (``STRICT_ATOL`` for a
    non-strict one: a caller's looser tolerance for quantized graphs no longer applies), is
    judged by the scale-free measures on several random sequences (a graph whose logits do
    not depend on its input is refused as unjudgeable, a future leak above ``LEAK_RTOL`` of
    the legitimate change is refused), and is refused for any leak across the batch. A
    non-strict graph with dynamic activation scales leaks by construction: its influence is
    returned for the record and only a gross leak (``GROSS_RATIO``, across time or batch) is
    refused; its effect on the loss is :func:`edgescale.bench.leak.measure_leak`'s to report.
    """
    exact = strict or not dynamic_scale_ops(path)
    influence = check_causal_onnx(path, atol=(atol if strict else STRICT_ATOL) if exact else math.inf, length=length)
    lm = OrtCausalLM(path)
    vocab = lm.session.get_outputs()[0].shape[-1]
    vocab = vocab if isinstance(vocab, int) else 256
    dep = future_dependence(lm.logits, vocab, length=length)
    if exact:
        refuse_unjudgeable(dep, str(path))
        refuse_future_leak(dep, str(path))
    else:
        refuse_gross_leak(dep, str(path), "tokens after position t")
    if _takes_batches(lm):
        batch = batch_dependence(lm.logits, vocab, length=length)
        if exact:
            refuse_batch_leak(batch, str(path))
        else:
            refuse_gross_leak(batch, str(path), "one sequence of a batch")
    return influence
