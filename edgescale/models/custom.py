"""Bring your own module: adapt a user's ``nn.Module`` into a causal LM edgescale can train,
compress, export and measure.

A study names ``model: {factory: "package.module:function", kwargs: {...}, ...}``. The
adapter fields say what the module looks like:

- ``input: ids | embeddings`` — with ``embeddings`` the module takes float features, so
  token and learned position embeddings (``embed_dim`` wide) are added in front;
- ``layout: batch_first | seq_first`` — (B, T, C) or (T, B, C) tensors;
- ``causal: builtin | mask_arg`` — the module masks itself, or takes a causal mask as the
  keyword ``mask_kwarg`` (an additive float mask, as ``nn.Transformer`` expects);
- ``vocab_size`` — the module's output size; the byte corpus is mapped onto its first
  256 ids and the logits are restricted to them (a larger head is allowed, never a smaller).

Such a module has no KV cache: it is exported with a single ``input_ids → logits``
graph and every generated token recomputes the whole context (``decode:
full-recompute`` in results). The causality guard checks it like any other model.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from edgescale.config import CustomModelConfig
from edgescale.errors import UserError
from edgescale.models.shape import ModelAccounting
from edgescale.models.trust import CodeTrust, beside_study, is_stdlib, trust_line


@dataclass(frozen=True)
class CustomSpec:
    """Everything needed to rebuild the adapted module (stored in checkpoint metadata)."""

    kind: ClassVar[str] = "custom"  # the checkpoint metadata's name for an adapted module
    model: CustomModelConfig
    vocab_size: int = 256  # the corpus vocabulary
    block_size: int = 128

    def to_dict(self) -> dict:
        return {
            "custom": self.model.model_dump(mode="json"),
            "vocab_size": self.vocab_size,
            "block_size": self.block_size,
        }

    @staticmethod
    def from_dict(d: dict) -> CustomSpec:
        return CustomSpec(CustomModelConfig.model_validate(d["custom"]), d["vocab_size"], d["block_size"])


@contextlib.contextmanager
def _importable_from(folder: Path | None) -> Iterator[None]:
    """``folder`` first on the import path for the duration, then the path exactly as it was."""
    if folder is None:
        yield
        return
    entry = str(Path(folder).resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # a module written since the last import is found
    try:
        yield
    finally:
        if sys.path and sys.path[0] == entry:
            del sys.path[0]
        elif entry in sys.path:
            sys.path.remove(entry)


# Modules vetted by :func:`resolve_factory` in this process. A model rebuilt later from its spec
# (a checkpoint's metadata, which a file can forge) runs only a factory vetted here first.
_VETTED: set[str] = set()


def resolve_factory(spec: str, trust: CodeTrust, field: str = "model.factory"):
    """``package.module:function`` → the callable, if ``trust`` allows it (:mod:`edgescale.models.trust`),
    with a clear error for each way it can fail.

    ``trust.study_dir`` is the study file's folder: paths in a study are relative to it, so a
    factory module beside the study imports without PYTHONPATH. The folder is on the import path
    for this call only; the imported module stays in ``sys.modules``, which is how every later
    build of the model in this process (training, loading checkpoints) finds it.
    """
    trust_line(spec, trust, field)  # refuses the standard library and untrusted modules before any import
    module_name, _, attr = spec.partition(":")
    try:
        with _importable_from(trust.study_dir):
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"cannot import {module_name!r}: {e}", file=trust.study_file, field=field) from None
    found = beside_study(module_name, trust.study_dir)
    origin = Path(getattr(module, "__file__", None) or "").resolve()
    if found is not None and not origin.is_relative_to(trust.study_dir):
        raise UserError(
            f"{module_name!r} is already imported from {origin}, not from {found}", file=trust.study_file, field=field
        )
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{module_name!r} has no callable {attr!r}", file=trust.study_file, field=field)
    plain = isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type))
    if plain and is_stdlib(fn.__module__ or "builtins"):  # e.g. ``from os import system`` in a trusted module
        raise UserError(
            f"{spec!r} is the standard library's {fn.__module__}.{attr}, never a model factory",
            file=trust.study_file,
            field=field,
        )
    _VETTED.add(module_name)
    return fn


def vetted_factory(spec: str, field: str = "model.factory"):
    """The factory of a spec being rebuilt: one :func:`resolve_factory` vetted in this process,
    or a shipped example; anything else (a forged checkpoint, say) is refused."""
    return resolve_factory(spec, CodeTrust(modules=tuple(sorted(_VETTED))), field)


class AdaptedLM(nn.Module):
    """A user module behind the adapter; ``logits(ids)`` is (B, T, corpus vocab)."""

    def __init__(self, spec: CustomSpec, seed: int = 0) -> None:
        super().__init__()
        m = spec.model
        self.spec = spec
        torch.manual_seed(seed)  # the user's module initialises from the global generator
        factory = vetted_factory(m.factory)
        try:  # a misspelt or missing argument: one line naming the field, not the factory's TypeError
            inspect.signature(factory).bind(**m.kwargs)
        except TypeError as e:
            raise UserError(f"{m.factory} cannot take these arguments: {e}", field="model.kwargs") from None
        except ValueError:  # no signature to check against (a builtin): the call itself says
            pass
        self.inner = factory(**m.kwargs)
        if not isinstance(self.inner, nn.Module):
            raise UserError(
                f"{m.factory} returned {type(self.inner).__name__}, not an nn.Module", field="model.factory"
            )
        if m.causal == "mask_arg" and m.mask_kwarg not in inspect.signature(self.inner.forward).parameters:
            raise UserError(f"the module's forward takes no {m.mask_kwarg!r} argument", field="model.mask_kwarg")
        if m.vocab_size < spec.vocab_size:
            raise UserError(
                f"the module predicts {m.vocab_size} ids but the corpus has {spec.vocab_size}", field="model.vocab_size"
            )
        if m.input == "embeddings":
            self.wte = nn.Embedding(spec.vocab_size, m.embed_dim)
            self.wpe = nn.Embedding(spec.block_size, m.embed_dim)
            nn.init.normal_(self.wte.weight, std=0.02)
            nn.init.normal_(self.wpe.weight, std=0.02)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.spec.model
        B, T = ids.shape
        x = ids
        if m.input == "embeddings":
            x = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))  # (B, T, C)
        if m.layout == "seq_first":
            x = x.transpose(0, 1)  # (T, B, ...)
        kwargs = {}
        if m.causal == "mask_arg":
            kwargs[m.mask_kwarg] = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)
        y = self.inner(x, **kwargs)
        if m.layout == "seq_first":
            y = y.transpose(0, 1)
        return y[..., : self.spec.vocab_size]  # the corpus lives in the module's first ids

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.logits(input_ids)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding by full recomputation (the module has no KV cache)."""
        ids = prompt
        out = []
        for _ in range(max_new_tokens):
            nxt = int(self.logits(ids)[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        return torch.tensor(out)


def accounting_of(spec: CustomSpec):
    """Counts for an adapted module, from the built module itself.

    N excludes the adapter's embeddings. FLOPs per token are 2 per multiply-accumulate of
    every weight matrix (≈ 2·N); the attention term is unknown for an arbitrary module
    and left out. There is no KV cache, so KV bytes are 0 — decoding recomputes instead.
    """
    model = AdaptedLM(spec)
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("wte.", "wpe.")))
    macs = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith(("wte.", "wpe.")))
    return ModelAccounting(
        params_total=total,
        params_embedding=emb,
        params_non_embedding=total - emb,
        flops_per_token_kaplan=2.0 * (total - emb),
        flops_per_token_exact=2.0 * macs,
        decode_context=spec.block_size,
        weight_bytes_fp32=4 * total,
        kv_bytes_per_token_fp32=0,
    )


@contextlib.contextmanager
def exportable_transformer_masks() -> Iterator[None]:
    """Let torch.export trace ``nn.TransformerEncoder`` with an explicit mask.

    ``nn.TransformerEncoder.forward`` compares the mask's *values* with a causal mask to
    decide whether a fast path may assume causality; that data-dependent branch stops
    torch.export. The mask is applied either way, so for export the hint is turned off.
    """
    import torch.nn.modules.transformer as tr

    original = tr._detect_is_causal_mask
    tr._detect_is_causal_mask = lambda mask, is_causal=None, size=None: bool(is_causal)
    try:
        yield
    finally:
        tr._detect_is_causal_mask = original
