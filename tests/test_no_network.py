"""Issue 17, case 13: edgescale makes no network calls, in any process a study starts.

The session's tiny study (``tests/conftest.py::tiny_run``) runs through the CLI in a
subprocess watched by ``tests/net_watch.py``: a ``sitecustomize.py`` hook in every Python
process the pipeline starts (the timing workers running ``_ort_worker.py``, the ONNX probe, the
executor's tasks), and where ``strace`` can trace, the system calls of every process, since
onnxruntime's own telemetry client is native code whose DNS lookup never passes through
Python's ``socket`` module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from net_watch import INET_CONNECT, strace


def test_a_full_tiny_study_makes_no_network_calls(tiny_run):
    _, run, _ = tiny_run
    assert (run / "results.json").is_file()
    records = [json.loads(line) for line in (run.parent / "net.jsonl").read_text().splitlines()]
    watched = {rec["pid"] for rec in records if rec["call"] == "watching"}
    assert len(watched) >= 2, "the hook loaded in the CLI process and in the pipeline's children"
    calls = [rec for rec in records if rec["call"] != "watching"]
    assert not calls, f"network calls from Python: {calls[:5]}"
    trace = run.parent / "strace.txt"
    if strace() is not None:
        inet = [line for line in trace.read_text().splitlines() if INET_CONNECT.search(line)]
        assert not inet, f"internet sockets opened (native code included): {inet[:5]}"


@pytest.mark.slow
def test_importing_onnxruntime_through_edgescale_looks_nothing_up(tmp_path):
    """The native telemetry, traced at the system-call level: onnxruntime imported and a session
    run through :func:`edgescale.ortenv.import_onnxruntime` opens no internet socket; imported
    plainly, it does (the control: without it this test could not fail). Both processes run at
    once: each sleeps 15 s for the lookup that comes about 10 s after the import."""
    tracer = strace()
    if tracer is None:
        pytest.skip("strace is not available or cannot trace here")
    imp = "from edgescale.ortenv import import_onnxruntime\nort = import_onnxruntime()\n"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    runs = {}
    for through_edgescale in (True, False):
        script = (
            "import numpy as np, onnx\n"
            "from onnx import TensorProto, helper\n"
            + (imp if through_edgescale else "import onnxruntime as ort\n")
            + "v = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1])\n"
            "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [v('x')], [v('y')])\n"
            "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n"
            "s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])\n"
            "s.run(None, {'x': np.ones(1, np.float32)})\n"
            "import time; time.sleep(15)\n"  # without the helper: DNS queries for its host about 10 s after import
        )
        trace = tmp_path / f"strace-{through_edgescale}.txt"
        cmd = [*tracer, "-o", str(trace), sys.executable, "-c", script]
        runs[through_edgescale] = (subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE), trace)
    inet = {}
    for through_edgescale, (proc, trace) in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        inet[through_edgescale] = [line for line in trace.read_text().splitlines() if INET_CONNECT.search(line)]
    assert not inet[True], f"onnxruntime opened internet sockets: {inet[True][:5]}"
    if not inet[False]:  # telemetry depends on the host's resolver setup; without a call-out the control shows nothing
        pytest.skip("a plain onnxruntime import made no lookup on this host: the control is not informative")
