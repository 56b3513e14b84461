"""edgescale's own torch checkpoints: one safetensors file with the model's spec in its metadata.

The metadata (``{"edgescale": {"kind": "gpt" | "custom", "model": spec.to_dict(), ...}}``)
is enough to rebuild the module, so a checkpoint loads without pickles (a pickle is refused
whatever its suffix) and its shape can be read without loading its tensors. Which family a
spec or a model belongs to is the spec's ``kind``; each family's builder and spec reader
sit in the two tables below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgescale.atomic import atomic_path
from edgescale.errors import UserError
from edgescale.models.custom import AdaptedLM, CustomSpec
from edgescale.models.gpt import GPT, GPTConfig

_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {"gpt": GPT, "custom": AdaptedLM}
_SPEC_READERS: dict[str, Callable[[dict], object]] = {
    "gpt": lambda d: GPTConfig(**d),
    "custom": CustomSpec.from_dict,
}


def build_model(spec, seed: int = 0) -> torch.nn.Module:
    """A fresh model from its spec: the GPT family, or a user's module behind the adapter."""
    return _BUILDERS[spec.kind](spec, seed=seed)


def spec_meta(spec) -> dict:
    return {"kind": spec.kind, "model": spec.to_dict()}


def spec_of(model: torch.nn.Module):
    return model.spec


def _spec_from_meta(meta: dict):
    return _SPEC_READERS[meta.get("kind", "gpt")](meta["model"])


def read_spec(path: Path):
    """The model spec recorded in a checkpoint's metadata, without loading its tensors.

    For a pruned GPT this is its per-layer shape (``layer_heads``, ``layer_ffn``).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return _spec_from_meta(json.loads((f.metadata() or {})["edgescale"]))
    except SafetensorError as e:
        raise UserError(f"not a readable safetensors file (truncated or corrupt): {e}", file=path) from None
    except (KeyError, json.JSONDecodeError):
        raise UserError("safetensors file without edgescale metadata (model shape unknown)", file=path) from None


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with each storage once (safetensors refuses shared tensors, e.g. a tied head), as
    CPU tensors in the parameters' own dtype: a checkpoint written on a GPU loads anywhere."""
    seen, out = set(), {}
    for k, v in model.state_dict().items():
        ptr = v.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            out[k] = v.contiguous().cpu()  # a CPU tensor: itself
    return out


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a :func:`weights` dict; the only keys allowed missing are tied copies."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    ptrs = {v.untyped_storage().data_ptr() for k, v in model.state_dict().items() if k in state}
    untied = [k for k in missing if model.state_dict()[k].untyped_storage().data_ptr() not in ptrs]
    if untied or unexpected:
        raise RuntimeError(f"missing {untied[:3]}, unexpected {list(unexpected)[:3]}")


def save_model(model: torch.nn.Module, path: Path, meta: dict) -> Path:
    tensors = weights(model)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"edgescale": json.dumps(meta, sort_keys=True)})
    return path


def load_model(path: Path, expect=None) -> tuple[torch.nn.Module, dict]:
    """Load an edgescale safetensors checkpoint; refuse pickles, truncation and shape mismatches.

    Never unpickles: a file that is not safetensors is an error, whatever its suffix.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", file=path)
    head = path.read_bytes()[:2]
    if head in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise UserError("a pickle/torch.save file, not safetensors; edgescale never unpickles checkpoints", file=path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["edgescale"])
        state = load_file(str(path))
    except SafetensorError as e:
        raise UserError(f"not a readable safetensors file (truncated or corrupt): {e}", file=path) from None
    except (KeyError, json.JSONDecodeError):
        raise UserError("safetensors file without edgescale metadata (model shape unknown)", file=path) from None
    cfg = _spec_from_meta(meta)
    if expect is not None and cfg != expect:
        raise UserError(f"checkpoint shape {cfg.to_dict()} differs from the expected {expect.to_dict()}", file=path)
    model = build_model(cfg)
    try:
        load_weights(model, state)
    except RuntimeError as e:
        raise UserError(f"tensors do not fit the recorded shape: {str(e).splitlines()[0]}", file=path) from None
    return model.eval(), meta
