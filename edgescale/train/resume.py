"""A training run's resume state (split out of :mod:`edgescale.train.trainer`): the model, the
AdamW state and the loop's state at a step, written as CPU tensors so a run interrupted on one
device resumes on another; loading casts each tensor to the run's parameter dtype and device.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgescale.atomic import atomic_path, write_json
from edgescale.models.checkpoint import load_weights, weights


def _save_resume(
    model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, curve: list, seen: tuple, out: Path, key: str
):
    """Model, AdamW state and loop state (curve, the running train-loss sum since the last
    curve point) at ``step``. The step is in both files, so a kill between the two writes
    leaves a pair that :func:`_load_resume` refuses rather than mixes."""
    tensors = {f"model.{k}": v for k, v in weights(model).items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{names[id(p)]}.{k}"] = v.detach().cpu().clone().reshape(v.shape)
    with atomic_path(out / "resume.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"key": key, "step": str(step)})
    write_json(out / "resume.json", {"key": key, "step": step, "curve": curve, "seen": list(seen)})


def _load_resume(model: torch.nn.Module, opt: torch.optim.Optimizer, out: Path, key: str) -> tuple[int, list, tuple]:
    """(step, curve, (objective sum, steps, cross-entropy sum) since the last curve point), or a fresh start."""
    from safetensors import SafetensorError, safe_open

    state_file, meta_file = out / "resume.safetensors", out / "resume.json"
    if not (state_file.exists() and meta_file.exists()):
        return 0, [], (0.0, 0, 0.0)
    try:
        meta = json.loads(meta_file.read_text())
        with safe_open(str(state_file), "pt") as f:
            stored = f.metadata() or {}
    except (json.JSONDecodeError, SafetensorError):
        return 0, [], (0.0, 0, 0.0)  # unreadable resume state is scratch, never trusted
    ours = meta.get("key") == key and stored == {"key": key, "step": str(meta.get("step"))}
    if not ours or len(meta.get("seen", ())) != 3:
        return 0, [], (0.0, 0, 0.0)  # another run's state, or a pair torn by a kill: start over
    tensors = load_file(str(state_file))
    load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    fused = {id(p): bool(g.get("fused") or g.get("capturable")) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        prefix = f"opt.{name}."
        st = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if st:
            opt.state[p] = {k: _state_for(p, k, v, fused[id(p)]) for k, v in st.items()}
    seen_loss, seen, seen_ce = meta["seen"]
    return int(meta["step"]), list(meta["curve"]), (float(seen_loss), int(seen), float(seen_ce))


def _state_for(p: torch.Tensor, name: str, value: torch.Tensor, fused: bool) -> torch.Tensor:
    """An AdamW state tensor saved on any device and dtype, as this run's optimizer expects it: the
    moments on the parameter's device in its dtype; ``step`` a float32 scalar, on the parameter's
    device for the fused kernel, on the CPU otherwise (torch.optim.Optimizer.load_state_dict's rule)."""
    if name == "step":
        return value.to(dtype=torch.float32, device=p.device if fused else "cpu")
    return value.to(dtype=p.dtype if value.is_floating_point() else value.dtype, device=p.device)
