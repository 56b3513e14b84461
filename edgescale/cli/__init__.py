"""The ``edgescale`` command line (typer). Each command validates, calls one library
function and says where its output went. Exit codes: 0 ok, 2 invalid input, 1 failure,
3 an infeasible target (an answer, not an error).

One module per group of commands, each registering on the one app:
``study`` (run, validate, export, report, recipes), ``scaling`` (plan, fit),
``answer`` (pick, compare, runs), ``device`` (devices, predict, calibrate) and
``onnx_file`` (bench, quantize on a user's ONNX model) and ``corpus`` (tokenize a corpus into the cache).
"""

# in the order --help lists them; each module registers its commands on the app
from edgescale.cli import study, scaling, answer, device, onnx_file, corpus  # noqa: F401, I001
from edgescale.cli.common import app, main

__all__ = ["app", "main"]
