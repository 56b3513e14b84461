"""Open an untrusted ONNX file in a child process before this process does (split out of
:mod:`edgescale.guard`, which re-exports :func:`probe_onnx`): a file that crashes onnxruntime, hangs
it, or is not ONNX at all costs that child, and this process reports it as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgescale.errors import UserError
from edgescale.ortenv import child_env

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
if not m.graph.node:
    print(json.dumps({"no_nodes": True})); sys.exit(0)
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

    A crash (a signal), a hang past ``timeout_s``, or a file that is not ONNX (an empty
    file, a graph with no nodes) becomes a :class:`UserError` naming the file; so does a
    model onnxruntime cannot build a session for, unless ``need_session`` is false
    (``validate`` reports which ops the CPU lacks).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", file=path)
    if path.stat().st_size == 0:
        raise UserError("empty file (0 bytes): not an ONNX model", file=path)
    env = child_env({**os.environ, "OMP_NUM_THREADS": "1"})  # its onnxruntime without telemetry
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
    if "no_nodes" in got:
        raise UserError("the graph has no nodes: an ONNX model with nothing to run", file=path)
    if "session_error" in got and need_session:
        raise UserError(f"onnxruntime cannot load this model: {got['session_error']}", file=path)
    return OnnxProbe(got.get("inputs", {}), got.get("outputs", {}), got.get("session_error"))
