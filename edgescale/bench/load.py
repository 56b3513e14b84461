"""Whether other work competed for the cores while the latency worker ran.

The 1-minute load average cannot tell: it lags by a minute, so at the start of a pipeline's
measurement it still holds the run's own loss scoring, and on 2 cores with 2 worker threads
any start reading above 0.5 read as "loaded" on every default run. Instead the parent, which
only waits on the worker, counts the runnable tasks (``procs_running`` in ``/proc/stat``) a
few times a second *during* the measurement and takes off what is its own (see
:func:`machine_load`). The load averages are kept beside it as context.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def runnable_tasks() -> int | None:
    """Runnable tasks on the machine right now (the reader included); None without ``/proc/stat``."""
    try:
        for line in PROC_STAT.read_text().splitlines():
            if line.startswith("procs_running "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class RunnableSampler:
    """Counts runnable tasks every ``interval_s`` from a parent thread while the worker runs.

    Use as a context manager around the wait on the worker; ``samples`` holds the counts.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgescale-load-sampler", daemon=True)

    def _run(self) -> None:
        # the first reading after one interval: the worker has started by then
        while not self._stop.wait(self.interval_s):
            n = runnable_tasks()
            if n is None:
                return
            self.samples.append(n)

    def __enter__(self) -> RunnableSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_load(machine: dict, wall_s: float, runnable: Sequence[int] | None = None) -> dict:
    """Whether other work competed for the worker's cores, from runnable-task counts taken during it.

    The rule: each count ``runnable`` is the machine's runnable tasks while the worker ran, the
    sampling thread itself included (it is running as it reads; the parent's main thread sleeps
    in the wait). Other work is ``runnable - 1 - threads`` (at least 0): the worker keeps at most
    ``threads`` tasks runnable (its intra-op pool, the main thread among them), so this errs
    toward quiet by whatever it left idle. That other work fits, without taking a core the
    worker times on, in ``logical_cpus - threads`` cores; ``loaded`` when its mean over the
    samples exceeds that by more than half a task (``limit``), so a daemon waking in one sample
    does not flag a run but one busy process beside a 2-thread worker on 2 cores does.

    The 1-minute load averages at start and end are kept as context (``own_share_end``: the
    worker's upper-bound share of the end reading, the average's 60 s time constant). With no
    counts (no ``/proc/stat``, or a measurement shorter than one sampling interval) ``loaded``
    is None: the load averages alone cannot say, since they lag by a minute.
    """
    cpus, threads = machine.get("logical_cpus") or 1, machine.get("threads") or 1
    start, end = machine["load_avg_start"][0], machine["load_avg_end"][0]
    limit = cpus - threads + 0.5
    others = [max(0, n - 1 - threads) for n in runnable or ()]
    mean = sum(others) / len(others) if others else math.nan
    return {
        "loaded": bool(mean > limit) if others else None,
        "other_runnable_mean": round(mean, 3) if others else None,
        "other_runnable_max": max(others) if others else None,
        "runnable_samples": len(others),
        "load_avg_1min_start": start,
        "load_avg_1min_end": end,
        "own_share_end": round(threads * (1.0 - math.exp(-wall_s / 60.0)), 3),
        "limit": limit,
        "logical_cpus": cpus,
        "threads": threads,
        "wall_s": round(wall_s, 2),
    }
