"""Wall time and peak resident memory of one stage of a run (a chain step, a scoring pass, a copy).

Peak RSS per stage comes from Linux's high-water mark: writing ``5`` to
``/proc/self/clear_refs`` resets ``VmHWM`` in ``/proc/self/status`` to the current RSS, so
the mark read at the end of a stage is that stage's own peak (the stage's allocations on top
of whatever the process already held). Where the reset is not allowed (another OS, a
locked-down container) the figure is the process's lifetime peak (``ru_maxrss``) and
``peak_rss_scope`` says ``process``, not ``stage``. Memory of child processes (the latency
worker) is not in these figures.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

MAX_THREADS_ENV = "EDGESCALE_MAX_THREADS"
_STATUS = Path("/proc/self/status")


def thread_cap(requested: int) -> int:
    """``requested`` threads for a torch or onnxruntime pool, at most ``$EDGESCALE_MAX_THREADS`` when
    it is set: several edgescale processes sharing a machine's cores (the test suite's workers, two
    studies side by side) would otherwise each start a pool of every core and oversubscribe them,
    which on 2 cores slows tiny-model training 20-fold. 0 (a library's "all cores") becomes the cap."""
    cap = os.environ.get(MAX_THREADS_ENV, "")
    if not cap.isdigit() or int(cap) < 1:
        return requested
    return min(requested, int(cap)) if requested else int(cap)


_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class StageUse:
    """Filled in when the stage ends."""

    wall_s: float = 0.0
    peak_rss_bytes: int | None = None
    peak_rss_scope: str = "stage"  # "stage" (reset at its start) or "process" (lifetime peak)

    def to_dict(self) -> dict:
        return {**asdict(self), "wall_s": round(self.wall_s, 2)}


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


@contextlib.contextmanager
def metered() -> Iterator[StageUse]:
    """``with metered() as use: ...``; ``use`` holds the stage's wall time and peak RSS afterwards."""
    use = StageUse()
    scoped = _reset_peak()
    t0 = time.perf_counter()
    try:
        yield use
    finally:
        use.wall_s = time.perf_counter() - t0
        use.peak_rss_bytes = _peak_bytes()
        use.peak_rss_scope = "stage" if scoped else "process"
