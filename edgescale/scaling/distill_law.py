"""The distillation scaling law of Busbridge et al. 2025 ("Distillation Scaling Laws", ICML 2025,
arXiv:2502.08606), its published constants, and the fitted-law file edgescale writes. Pure numpy.

The student's held-out cross-entropy after distilling from a teacher of loss L_T for D_S tokens
(their Eq. 8; Appendix Eq. 46 prints the primes):

    L_S = L_T + L_T^(−c0) · (1 + (L_T / (L̃_S·d1))^(1/f1))^(−c1·f1) · (A′/N_S^α′ + B′/D_S^β′)^γ′

with L̃_S = L(N_S, D_S) the student's loss had it been trained supervised on the same tokens, from
the supervised law of the same study, their Eq. 1: L(N, D) = E + (A/N^α + B/D^β)^γ (γ = 1 is
Hoffmann et al.'s form, which edgescale's own fits use). The middle factor is a broken power law in
L_T/L̃_S: the "capacity gap", where a teacher much stronger than the student stops helping.

Constants: Table 6 of the paper (90% bootstrap intervals, 4,096 resamples; 73 supervised runs and 697
distillation runs), read from the v2 full text (arxiv.org/abs/2502.08606v2, Appendix F). Their losses are
validation cross-entropy on the English subset of C4 (nats per token, inferred, with a vocabulary of
about 32k, inferred: neither is stated in the text read), N counts non-embedding parameters, students
143M–12.6B. They do not transfer to edgescale's bits per byte on Shakespeare with tiny byte-level
models: the preset is shown for reference, and a plan uses a law fitted on the user's own grid
(:mod:`edgescale.scaling.distill_fit`) unless the preset is asked for by name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgescale.errors import UserError

FORM = "L_S = L_T + L_T^-c0 · (1 + (L_T/(L̃_S·d1))^(1/f1))^(-c1·f1) · (A'/N_S^α' + B'/D_S^β')^γ'"
SUPERVISED_FORM = "L = E + (A/N^α + B/D^β)^γ"
PARAMS = ("c0", "c1", "f1", "d1", "A", "B", "alpha", "beta", "gamma")  # A, B, alpha... are the primed ones
FIT_VERSION = 1


@dataclass(frozen=True)
class Supervised:
    """L(N, D) = E + (A/N^α + B/D^β)^γ: Busbridge et al.'s Eq. 1; γ = 1 is a Chinchilla law."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    gamma: float = 1.0
    name: str = "custom"
    unidentified: tuple[str, ...] = ()  # constants the fit's data do not pin (edgescale.scaling.identify)

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + (self.A / n**self.alpha + self.B / d**self.beta) ** self.gamma

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("E", "A", "B", "alpha", "beta", "gamma", "name")} | {
            "unidentified": list(self.unidentified)
        }


@dataclass(frozen=True)
class DistillLaw:
    """Busbridge et al. 2025 Eq. 8 with its constants and where they come from."""

    c0: float
    c1: float
    f1: float
    d1: float
    A: float
    B: float
    alpha: float
    beta: float
    gamma: float
    supervised: Supervised
    name: str = "custom"
    source: str = ""
    loss_unit: str = "nats/token"
    corpus: str = ""
    n_convention: str = "non_embedding"
    form: str = FORM  # a reduced fit says which constants it fixed
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_level: float = 0.95
    unidentified: dict[str, str] = field(default_factory=dict)  # constant -> why the data do not pin it
    fixed: dict[str, str] = field(default_factory=dict)  # constant -> what it was fixed to (a reduced form)
    published: bool = False  # a preset: its constants are the paper's, not tested on this grid

    def student_loss(self, n_s, d_s, l_t, l_tilde=None):
        """L_S (Eq. 8); ``l_tilde`` (the student's supervised loss) defaults to the supervised law's."""
        n_s, d_s, l_t = (np.asarray(x, dtype=float) for x in (n_s, d_s, l_t))
        lt_s = self.supervised.loss(n_s, d_s) if l_tilde is None else np.asarray(l_tilde, dtype=float)
        return student_loss(self.theta, n_s, d_s, l_t, lt_s)

    @property
    def theta(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in PARAMS], dtype=float)

    @property
    def status(self) -> str:
        if self.published:
            return "published constants (not fitted here)"
        return "unidentified" if self.unidentified else "identified"

    def with_(self, **changes) -> DistillLaw:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in PARAMS}
        out |= {k: getattr(self, k) for k in ("name", "source", "loss_unit", "corpus", "n_convention", "form")}
        out["ci"] = {k: [_finite(v) for v in ab] for k, ab in self.ci.items()}
        out |= {"ci_level": self.ci_level, "unidentified": dict(self.unidentified), "fixed": dict(self.fixed)}
        out["supervised"] = self.supervised.to_dict()
        out["status"] = self.status
        return out


def student_loss(theta, n_s, d_s, l_t, l_tilde):
    """Eq. 8 at ``theta`` = (c0, c1, f1, d1, A', B', α', β', γ'), in log space where it would overflow:
    the capacity-gap factor is exp(−c1·f1·log1p(x^(1/f1))) with c1·f1 ≈ 47 in the published fit."""
    c0, c1, f1, d1, a, b, al, be, ga = theta
    with np.errstate(over="ignore", divide="ignore"):
        ratio = np.log(l_t) - np.log(l_tilde) - math.log(d1)
        gap = -c1 * f1 * np.logaddexp(0.0, ratio / f1)  # log of the broken power law
        power = ga * np.log(a / n_s**al + b / d_s**be)
        return l_t + np.exp(-c0 * np.log(l_t) + gap + power)


def _finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# Busbridge et al. 2025, arXiv:2502.08606 v2, Appendix F, Table 6 (90% bootstrap intervals in brackets
# there, kept in ``ci``). Supervised column: E 1.220, A 3355, B 18186, α 0.408, β 0.431, γ 0.452 (73 runs;
# also confirmed by a second, independent transcription). Distillation column (697 runs): A′ 2243,
# B′ 24181, α′ 0.321, β′ 0.637, γ′ 0.764, c0 2.549, c1 522.6 (its interval printed as (522.6, 522.6)),
# f1 0.090, d1 1.315.
BUSBRIDGE2025_SUPERVISED = Supervised(
    E=1.220, A=3355.0, B=18186.0, alpha=0.408, beta=0.431, gamma=0.452, name="busbridge2025 supervised (Eq. 1)"
)
BUSBRIDGE2025 = DistillLaw(
    c0=2.549,
    c1=522.6,
    f1=0.090,
    d1=1.315,
    A=2243.0,
    B=24181.0,
    alpha=0.321,
    beta=0.637,
    gamma=0.764,
    supervised=BUSBRIDGE2025_SUPERVISED,
    name="busbridge2025",
    source="Busbridge et al. 2025, arXiv:2502.08606 (v2), Eq. 8 / App. Eq. 46, constants from App. F Table 6",
    loss_unit="nats/token (inferred; not stated in the text read)",
    corpus="English C4, ~32k vocabulary (inferred); students 143M-12.6B non-embedding parameters; μP, seq 4096; "
    "pure distillation (λ = 1, τ = 1). Constants do not transfer to another corpus, tokenizer or unit "
    "(edgescale: bits/byte on Shakespeare): shown for reference",
    n_convention="non_embedding",
    ci={
        "A": (2227.0, 2255.0),
        "B": (24084.0, 24266.0),
        "alpha": (0.319, 0.324),
        "beta": (0.634, 0.640),
        "gamma": (0.732, 0.788),
        "c0": (2.425, 2.615),
        "c1": (522.6, 522.6),
        "f1": (0.088, 0.093),
        "d1": (1.302, 1.327),
    },
    ci_level=0.90,
    published=True,
)
PRESETS = {"busbridge2025": BUSBRIDGE2025}


def law_from_dict(doc: dict) -> DistillLaw:
    """A law written by :meth:`DistillLaw.to_dict` (a fit file's ``law``)."""
    sup = dict(doc["supervised"])
    sup["unidentified"] = tuple(sup.get("unidentified", ()))
    return DistillLaw(
        **{k: float(doc[k]) for k in PARAMS},
        supervised=Supervised(**sup),
        **{k: doc[k] for k in ("name", "source", "loss_unit", "corpus", "n_convention", "form")},
        ci={k: tuple(math.nan if x is None else x for x in v) for k, v in doc.get("ci", {}).items()},
        ci_level=doc.get("ci_level", 0.95),
        unidentified=dict(doc.get("unidentified", {})),
        fixed=dict(doc.get("fixed", {})),
    )


def resolve_distill_law(spec: str) -> DistillLaw:
    """``busbridge2025`` (the published preset) or ``fit:FILE`` (what ``benchmarks/distill_law.py``
    or :func:`edgescale.scaling.distill_fit.write_fit` wrote)."""
    if spec.startswith("fit:"):
        path = Path(spec[4:])
        try:
            doc = json.loads(path.read_text())
            law = law_from_dict(doc["law"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot read a distillation-law fit from {path}: {e}", field="--distill-law") from e
        return law.with_(name=spec)
    if spec not in PRESETS:
        raise UserError(
            f"unknown distillation law {spec!r}; allowed: {', '.join(PRESETS)} or fit:FILE", field="--distill-law"
        )
    return PRESETS[spec]
