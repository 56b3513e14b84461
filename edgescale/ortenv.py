"""onnxruntime with its telemetry off, in this process and every process edgescale starts.

onnxruntime 1.32 on Linux ships Microsoft's 1DS telemetry client. Importing the package is
enough for it to open a database under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``
and look up ``mobile.events.data.microsoft.com`` from a native thread (seen with ``strace -f``:
DNS queries on port 53, outside Python's ``socket`` module). ``disable_telemetry_events()``
after the import does not stop that lookup; the environment variable
``ORT_DISABLE_TELEMETRY=1`` read at import time does. So:

- :func:`import_onnxruntime` imports the package with the variable set (and disables the events
  too); every ``import onnxruntime`` in edgescale goes through it;
- :func:`child_env` is the environment of a child that imports onnxruntime (the timing
  worker, the ONNX probe, the genai builder);
- the CLI sets the variable for its whole process (:func:`edgescale.cli.common.main`), so
  libraries that import onnxruntime themselves (its quantization tools, optimum) and every
  child process inherit it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import ModuleType

TELEMETRY_VAR = "ORT_DISABLE_TELEMETRY"


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with onnxruntime's telemetry off."""
    return {**(os.environ if env is None else env), TELEMETRY_VAR: "1"}


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, imported with its telemetry off."""
    if "onnxruntime" not in sys.modules:
        before = os.environ.get(TELEMETRY_VAR)
        os.environ[TELEMETRY_VAR] = "1"  # read by the native library when it loads
        try:
            import onnxruntime as ort
        finally:
            if before is None:  # importing leaves the environment as it found it
                os.environ.pop(TELEMETRY_VAR, None)
            else:
                os.environ[TELEMETRY_VAR] = before
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort
