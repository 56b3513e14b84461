"""Causality guard: the logits at positions <= t must not depend on tokens after t.

A model that peeks ahead (bidirectional attention, a mask bug, a label leak) scores a
fake-low held-out loss, so every model entering the pipeline is checked strictly — the
torch model after training and its exported float graph.

Graphs made by ONNX-stage steps are checked with a looser tolerance, and the measured
influence is recorded: dynamic activation quantization computes one scale per call
over the whole input, so in a batched prefill a position's logits move slightly
(0.5–2.4% of the largest logit on tiny models) when later tokens change. Decoding
through the KV cache, one token per call, has no such effect.

:func:`probe_onnx` opens an untrusted ONNX file (one a user hands to ``validate``,
``export`` or ``predict``) in a child process first, with a timeout, so a native crash or
a hang inside onnxruntime becomes one error naming the file instead of taking edgescale
down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.errors import CausalityError, UserError

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


# Runs in a fresh interpreter: parse with onnx, then build a CPU session; one JSON line out.
_PROBE_SCRIPT = """
import json, sys
def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
try:
    import onnx
    m = onnx.load(sys.argv[1], load_external_data=False)
except Exception as e:
    print(json.dumps({"unreadable": first_line(e)})); sys.exit(0)
out = {"opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None)}
try:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
    out["inputs"] = {i.name: [d if isinstance(d, int) else str(d) for d in (i.shape or [])] for i in s.get_inputs()}
    out["outputs"] = {o.name: [d if isinstance(d, int) else str(d) for d in (o.shape or [])] for o in s.get_outputs()}
except Exception as e:
    out["session_error"] = first_line(e)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class OnnxProbe:
    """What a child process saw opening an ONNX file: its I/O, or why onnxruntime refused it."""

    inputs: dict[str, list]
    outputs: dict[str, list]
    session_error: str | None = None


def probe_onnx(path: Path, timeout_s: float = 120.0, *, need_session: bool = True) -> OnnxProbe:
    """Open ``path`` with onnx and onnxruntime in a child process before this process does.

    A crash (a signal), a hang past ``timeout_s``, or a file that is not ONNX becomes a
    :class:`UserError` naming the file; so does a model onnxruntime cannot build a session
    for, unless ``need_session`` is false (``validate`` reports which ops the CPU lacks).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", file=path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT, str(path.resolve())],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise UserError(
            f"onnxruntime did not finish opening this model within {timeout_s:g} s; refused as untrusted", file=path
        ) from None
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else proc.returncode
        raise UserError(f"onnxruntime crashed opening this model ({sig}); refused as untrusted", file=path)
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise UserError(f"onnxruntime failed opening this model: {err}", file=path) from None
    if "unreadable" in got:
        raise UserError(f"not a readable ONNX file: {got['unreadable']}", file=path)
    if "session_error" in got and need_session:
        raise UserError(f"onnxruntime cannot load this model: {got['session_error']}", file=path)
    return OnnxProbe(got.get("inputs", {}), got.get("outputs", {}), got.get("session_error"))
