"""Scaling-law forms and published presets. Pure numpy; no torch.

Sources (constants are quoted with their table or equation next to them):

- Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361.
  N = non-embedding parameters; loss in nats/token on WebText2 with GPT-2's BPE
  (vocab 50257, n_ctx 1024). "N_c, D_c, C_c depend on the vocabulary size and
  tokenization and hence do not have a fundamental meaning" (§1.2).
- Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (Chinchilla),
  arXiv:2203.15556. N = all parameters; loss in nats/token on MassiveText with a
  SentencePiece tokenizer. Approach 3 parametric fit, App. D.2 eq. 10.
- Besiroglu, Erdil, Barnett, You 2024, "Chinchilla Scaling: A replication attempt",
  arXiv:2404.10102 — refit of the same form on data extracted from Hoffmann's Fig. 4.

On another corpus or tokenizer the absolute losses of these presets do not apply;
they still guide allocation (exponents, tokens per parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

PF_DAY = 8.64e19  # FLOP in one petaflop/s-day (Kaplan §1.3)
# The inputs the planners (edgescale.scaling.plan and .distill_plan) answer for. A law is fitted on runs
# of 1e15-1e25 FLOPs; far past these its numbers say nothing, and much further the arithmetic (N^alpha,
# 6·N·D) leaves float range. A loss above 100 (nats per token: uniform over e^100 tokens) is no model's.
MAX_COMPUTE_FLOPS = 1e40
MAX_TOKENS = 1e30
MAX_LOSS_TARGET = 100.0

NConvention = Literal["non_embedding", "total"]


def _over(a: float, x: float, p: float) -> float:
    """a / x**p, and 0 where x**p overflows a float: a degenerate fit (alpha = 64, A = 1.6e248 was
    seen on the tiny test study) must give a plan or an infeasible verdict, not an OverflowError."""
    try:
        return a / x**p
    except OverflowError:
        return 0.0


@dataclass(frozen=True)
class Chinchilla:
    """Parametric law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2).

    E is the irreducible loss, A/N^alpha the finite-capacity term, B/D^beta the
    finite-data/optimisation term. Under C = 6·N·D the loss-optimal allocation is
    (eq. 4): N_opt = G·(C/6)^a, D_opt = G^-1·(C/6)^b with G = (alpha·A / (beta·B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "custom"
    source: str = ""
    n_convention: NConvention = "total"
    loss_unit: str = "nats/token"
    corpus: str = ""
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% intervals where published
    form: str = "L = E + A/N^α + B/D^β"  # a fit may reduce it (edgescale.scaling.fit.REDUCED_FORM)
    unidentified: tuple[str, ...] = ()  # constants (E, alpha, beta) the fit's data do not pin: no plan
    identify_with: dict | None = None  # then: the sizes and token budgets that would (plan.data_to_identify)

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def a(self) -> float:
        """Allocation exponent: N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def compute_optimal(self, compute_flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising L subject to 6·N·D = C (closed form, eq. 4)."""
        c6 = compute_flops / 6
        return self.G * c6**self.a, c6**self.b / self.G

    def n_for_loss(self, target: float, d: float) -> float:
        """N reaching ``target`` at D tokens, or inf if the data term alone is too large."""
        gap = target - self.E - _over(self.B, d, self.beta)
        return math.inf if gap <= 0 else (self.A / gap) ** (1 / self.alpha)

    def d_for_loss(self, target: float, n: float) -> float:
        gap = target - self.E - _over(self.A, n, self.alpha)
        return math.inf if gap <= 0 else (self.B / gap) ** (1 / self.beta)

    def n_min_for_loss(self, target: float) -> float:
        """N that reaches ``target`` only with infinite data (inf when target <= E)."""
        return math.inf if target <= self.E else (self.A / (target - self.E)) ** (1 / self.alpha)

    def with_(self, **changes) -> Chinchilla:
        return replace(self, **changes)


@dataclass(frozen=True)
class Kaplan:
    """Kaplan et al. 2020 power laws (N = non-embedding parameters, D tokens, S steps, loss nats/token).

    - L(N) = (N_c / N)^alpha_N                                 (eq. 1.1)
    - L(D) = (D_c / D)^alpha_D                                 (eq. 1.2)
    - L(C_min) = (C_c^min / C_min)^alpha_C^min, C_min in PF-days (eq. 1.3)
    - L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D   (eq. 1.5 = 4.1; Table 2 constants)
    - L(N, S) = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S       (eq. 1.6 = 5.6)
    - B_crit(L) = B_* / L^(1/alpha_B)                           (eq. 1.4 = 5.3)
    - overfitting avoided when D >~ 5e3 · N^0.74                (eq. 4.4; 0.74 = alpha_N / alpha_D of Table 2)
    - compute-efficient N_opt = 1.3e9 · C_min^0.73, C_min in PF-days (Table 6 / eq. 6.1)
    """

    alpha_N: float = 0.076  # Table 5
    N_c: float = 8.8e13  # Table 5, non-embedding parameters
    alpha_D: float = 0.095  # Table 5
    D_c: float = 5.4e13  # Table 5, tokens
    alpha_C_min: float = 0.050  # Table 5
    C_c_min: float = 3.1e8  # Table 5, PF-days
    alpha_B: float = 0.21  # Table 5
    B_star: float = 2.1e8  # Table 5, tokens
    alpha_S: float = 0.76  # Table 5
    S_c: float = 2.1e3  # Table 5, steps
    joint_alpha_N: float = 0.076  # Table 2, fit of eq. 1.5
    joint_alpha_D: float = 0.103  # Table 2
    joint_N_c: float = 6.4e13  # Table 2
    joint_D_c: float = 1.8e13  # Table 2
    n_opt_coeff: float = 1.3e9  # Table 6: N_opt = 1.3e9 · C_min^0.73
    n_opt_exp: float = 0.73  # Table 6
    overfit_coeff: float = 5e3  # eq. 4.4
    overfit_exp: float = 0.74  # eq. 4.4
    name: str = "kaplan2020"
    source: str = "Kaplan et al. 2020, arXiv:2001.08361, Table 5 / Table 2 / Table 6 / eq. 4.4"
    n_convention: NConvention = "non_embedding"
    loss_unit: str = "nats/token"
    corpus: str = "WebText2, GPT-2 BPE (vocab 50257), n_ctx 1024"
    E: float = 0.0  # the power laws have no irreducible term
    ci: dict = field(default_factory=dict)

    def loss_n(self, n):
        return (self.N_c / np.asarray(n, dtype=float)) ** self.alpha_N

    def loss_d(self, d):
        return (self.D_c / np.asarray(d, dtype=float)) ** self.alpha_D

    def loss_c_min(self, c_pf_days):
        return (self.C_c_min / np.asarray(c_pf_days, dtype=float)) ** self.alpha_C_min

    def loss(self, n, d):
        """Joint L(N, D), eq. 1.5 with the Table 2 constants."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        ratio = self.joint_alpha_N / self.joint_alpha_D
        return ((self.joint_N_c / n) ** ratio + self.joint_D_c / d) ** self.joint_alpha_D

    def loss_n_s(self, n, s_min):
        """Learning curve L(N, S_min), eq. 1.6 (Table 3 uses alpha_N 0.077, N_c 6.5e13)."""
        return self.loss_n(n) + (self.S_c / np.asarray(s_min, dtype=float)) ** self.alpha_S

    def critical_batch_tokens(self, loss):
        """B_crit(L) = B_* / L^(1/alpha_B), tokens (eq. 1.4); L in nats/token on WebText2."""
        return self.B_star / np.asarray(loss, dtype=float) ** (1 / self.alpha_B)

    def min_tokens_no_overfit(self, n):
        """D needed to stay within ~0.02 nats of the infinite-data loss: 5e3 · N^0.74 (eq. 4.4)."""
        return self.overfit_coeff * np.asarray(n, dtype=float) ** self.overfit_exp

    def compute_optimal_n(self, c_min_pf_days):
        """Compute-efficient model size N_opt = 1.3e9 · C_min^0.73 (Table 6)."""
        return self.n_opt_coeff * np.asarray(c_min_pf_days, dtype=float) ** self.n_opt_exp

    def compute_optimal(self, compute_flops: float) -> tuple[float, float]:
        """(N, D) from Table 6's compute-efficient frontier with D = C / (6·N).

        Kaplan's frontier stops training ~10% above convergence (App. B.5) and is not the
        loss-minimising split of the joint law; it is what their paper prescribes.
        """
        n = float(self.compute_optimal_n(compute_flops / PF_DAY))
        return n, compute_flops / (6 * n)

    def d_for_loss(self, target: float, n: float) -> float:
        """Invert the joint law for D; inf when N alone cannot reach ``target``."""
        gap = target ** (1 / self.joint_alpha_D) - (self.joint_N_c / n) ** (self.joint_alpha_N / self.joint_alpha_D)
        return math.inf if gap <= 0 else self.joint_D_c / gap

    def n_for_loss(self, target: float, d: float) -> float:
        gap = target ** (1 / self.joint_alpha_D) - self.joint_D_c / d
        return math.inf if gap <= 0 else self.joint_N_c * gap ** (-self.joint_alpha_D / self.joint_alpha_N)

    def n_min_for_loss(self, target: float) -> float:
        return self.joint_N_c * target ** (-1 / self.joint_alpha_N)


CHINCHILLA2022 = Chinchilla(
    E=1.69,
    A=406.4,
    B=410.7,
    alpha=0.34,
    beta=0.28,
    name="chinchilla2022",
    source="Hoffmann et al. 2022, arXiv:2203.15556, App. D.2 eq. 10 (approach 3), as printed",
    corpus="MassiveText, SentencePiece tokenizer",
)

EPOCH2024 = Chinchilla(
    E=1.8172,
    A=482.01,
    B=2085.43,
    alpha=0.3478,
    beta=0.3658,
    name="epoch2024",
    source="Besiroglu et al. 2024, arXiv:2404.10102, Table 1 (refit of Hoffmann's approach 3)",
    corpus="MassiveText, SentencePiece tokenizer (data extracted from Hoffmann et al. Fig. 4)",
    # 95% bootstrap intervals as published; A and B lie on a flat ridge of the objective.
    ci={"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415), "A": (285.2, 743.6), "B": (1042, 5810)},
)

KAPLAN2020 = Kaplan()

PRESETS: dict[str, Chinchilla | Kaplan] = {
    "kaplan2020": KAPLAN2020,
    "chinchilla2022": CHINCHILLA2022,
    "epoch2024": EPOCH2024,
}
