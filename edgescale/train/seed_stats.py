"""Statistics of seed replicates: the equal-compute budget of a distilled student, and the
KD − scratch difference with an interval over seeds.

The interval on a difference of means is Welch's: mean ± t·SE with SE² = s₁²/n₁ + s₂²/n₂ and
the Welch–Satterthwaite degrees of freedom (seeds of the two arms are independent runs). Seeds
vary the student's init and data order; the teacher is the study seed's model in every KD
replicate, so the teacher's own seed variance is not in the interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def equal_compute_tokens(
    student_params: int, teacher_params: int, kd_tokens: int, cap_tokens: int
) -> tuple[int, str | None]:
    """Scratch tokens with the training FLOPs of a KD run of ``kd_tokens``: 6·N_s·D for the student's
    forward and backward plus 2·N_t·D for the teacher's forward, over 6·N_s per scratch token
    (Kaplan et al. 2020's C ≈ 6ND, N total parameters). Capped at ``cap_tokens`` (max_epochs of the
    train split); the second value says so when the cap decided, else None."""
    flops = 6 * student_params * kd_tokens + 2 * teacher_params * kd_tokens
    tokens = round(flops / (6 * student_params))
    if tokens <= cap_tokens:
        return tokens, None
    return cap_tokens, (
        f"capped by max_epochs at {cap_tokens:,} tokens: equal compute asks for {tokens:,} "
        f"({tokens / kd_tokens:.2f}x the KD tokens); this twin has less compute than its student"
    )


@dataclass(frozen=True)
class Delta:
    """distilled − scratch in bits per byte (negative: distillation helps), over seeds."""

    twin: str  # "equal_tokens" or "equal_compute"
    split: str
    mean: float
    lo: float | None  # None with fewer than 2 seeds on a side: no interval
    hi: float | None
    se: float | None
    df: float | None
    n_distilled: int
    n_scratch: int

    def to_dict(self) -> dict:
        return asdict(self)


def welch_delta(twin: str, split: str, distilled: list[float], scratch: list[float], level: float = 0.95) -> Delta:
    """mean(distilled) − mean(scratch) with Welch's ``level`` interval (see the module docstring)."""
    from scipy.stats import t as student_t

    a, b = np.asarray(distilled, float), np.asarray(scratch, float)
    mean = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Delta(twin, split, mean, None, None, None, None, int(a.size), int(b.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Delta(twin, split, mean, mean, mean, 0.0, None, int(a.size), int(b.size))
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return Delta(twin, split, mean, mean - half, mean + half, se, float(df), int(a.size), int(b.size))
