"""One variant that fails does not take the study down: it is flagged with its stage and
reason, the others are scored, measured and analysed, and a rerun retries only it.

The study has one size and five recipes: fp32 and int8_dynamic, which succeed, and three
registered here, each failing one way the issue names:

- ``test.boom``: a compression step that raises a RuntimeError (a runtime error in a step);
- ``test.leak``: a graph whose logits at every position add the last position's logits, so
  later tokens reach earlier positions (the causality guard refuses it while scoring);
- ``test.nan``: a graph whose logits turn NaN late in a window (numerics: a non-finite loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper
from tiny_study import TINY

from edgescale.backends.torch_lm import TorchBackend
from edgescale.compress.registry import REGISTRY, StepConfig, StepContext, StepFacts, register, registry
from edgescale.pipeline import NumericsError, VariantFailure, attempt
from edgescale.progress import Reporter
from edgescale.results.io import read_results
from edgescale.run import run_study

CALLS: dict[str, int] = {}
BOOM = {"fail": True}


class NoConfig(StepConfig):
    pass


def _count(op: str) -> None:
    CALLS[op] = CALLS.get(op, 0) + 1


def _rewire_logits(path: Path, ctx: StepContext, nodes, inits, name: str) -> Path:
    """``path`` with its ``logits`` output renamed to ``raw`` and ``nodes`` computing ``logits`` from it."""
    m = onnx.load(str(path))
    for n in m.graph.node:
        n.output[:] = ["raw" if o == "logits" else o for o in n.output]
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(inits)
    out = ctx.work_dir / f"model.{name}.onnx"
    onnx.save(m, str(out))
    return out


def boom(path: Path, cfg: NoConfig, ctx: StepContext) -> Path:
    """Fails with a runtime error (test technique)."""
    _count("test.boom")
    if BOOM["fail"]:
        raise RuntimeError("boom: the kernel this step needs is missing")
    return path


def leak(path: Path, cfg: NoConfig, ctx: StepContext) -> Path:
    """Adds the last position's logits to every position: later tokens reach earlier logits (test technique)."""
    _count("test.leak")
    last = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_index")
    nodes = [
        helper.make_node("Gather", ["raw", "last_index"], ["last"], axis=1),  # (B, 1, V)
        helper.make_node("Add", ["raw", "last"], ["logits"]),
    ]
    return _rewire_logits(path, ctx, nodes, [last], "leak")


def nan(path: Path, cfg: NoConfig, ctx: StepContext) -> Path:
    """Makes every logit at positions 28 and later NaN (test technique): the guard's 24-token
    probes stay finite, the loss over the study's 32-token windows does not."""
    _count("test.nan")
    pad = np.zeros((1, TINY["ladder"]["block_size"], 1), dtype=np.float32)
    pad[:, 28:] = np.nan
    inits = [
        numpy_helper.from_array(pad, "nan_pad"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "time_axis"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
    ]
    nodes = [
        helper.make_node("Shape", ["raw"], ["raw_shape"]),
        helper.make_node("Gather", ["raw_shape", "time_axis"], ["n_time"], axis=0),  # (1,): T
        helper.make_node("Slice", ["nan_pad", "zero", "n_time", "time_axis"], ["pad_t"]),  # (1, T, 1)
        helper.make_node("Add", ["raw", "pad_t"], ["logits"]),
    ]
    return _rewire_logits(path, ctx, nodes, inits, "nan")


@pytest.fixture
def failing_techniques():
    """The three failing techniques, registered for one test; the registry is restored after."""
    saved = dict(registry())
    for op, fn in (("test.boom", boom), ("test.leak", leak), ("test.nan", nan)):
        register(op, NoConfig, takes="onnx", gives="onnx", facts=StepFacts())(fn)
    CALLS.clear()
    BOOM["fail"] = True
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


def _study(root: Path) -> Path:
    for op in ("boom", "leak", "nan"):
        (root / f"{op}.yaml").write_text(yaml.safe_dump({"name": op, "steps": [{"op": f"test.{op}"}]}))
    study = {k: v for k, v in TINY.items() if k != "distillation"}
    study["ladder"] = {**TINY["ladder"], "sizes": TINY["ladder"]["sizes"][:1]}  # one size: "a"
    study["recipes"] = ["fp32", "int8_dynamic", "boom.yaml", "leak.yaml", "nan.yaml"]
    study["devices"] = ["host"]
    # the counts below are the variants' own; the degradation grid (which would run each recipe at
    # the cooled branches too, and retry its failures) has its own test, tests/test_degradation_grid.py
    study["evaluation"] = {**TINY["evaluation"], "degradation_grid": False}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_failing_variant_is_flagged_and_the_rest_is_written(failing_techniques, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESCALE_DB", str(tmp_path / "edgescale.db"))
    study, run = _study(tmp_path), tmp_path / "run"
    run_study(study, run, Reporter(quiet=True))  # returns: the failures did not stop the study

    results = read_results(run)  # validates against the schema
    assert results.degradation_grid is None  # turned off
    failed = {f.variant_id: f for f in results.failed_variants}
    assert set(failed) == {"a/boom", "a/leak", "a/nan"}
    assert all(f.status == "failed" for f in failed.values())
    assert (failed["a/boom"].failed_stage, failed["a/boom"].error_type) == ("test.boom", "RuntimeError")
    assert "the kernel this step needs is missing" in failed["a/boom"].reason
    assert (failed["a/leak"].failed_stage, failed["a/leak"].error_type) == ("loss", "CausalityError")
    assert "not causal" in failed["a/leak"].reason
    assert failed["a/nan"].failed_stage == "loss"
    assert failed["a/nan"].error_type == "NumericsError" and "non-finite" in failed["a/nan"].reason

    ok = {v.variant_id: v for v in results.variants}
    assert set(ok) == {"a/fp32", "a/int8_dynamic"}
    assert all(v.bpb("validation") and v.bpb("test") for v in ok.values())
    assert all(v.latency["host"].decode_ms_p50 for v in ok.values())
    a = results.analysis
    front = [e.variant_id for f in a.frontiers.values() for e in f.front]
    assert front and set(front) <= set(ok)
    considered = {vid for f in a.frontiers.values() for vid in [*(e.variant_id for e in f.front), *f.excluded]}
    assert not considered & set(failed)
    pick = a.picks["host"]
    assert pick.status == "ok" and pick.variant.variant_id in ok and set(pick.considered) <= set(ok)
    text = (run / "summary.md").read_text() + (run / "report.html").read_text()
    for vid in failed:
        assert vid in text
    assert "not causal" in text and "boom: the kernel" in text

    # A rerun retries the failed variants (their failed stage again) and reuses every success.
    BOOM["fail"] = False
    scored: list[str] = []
    score = TorchBackend.score

    def counting_score(self, path, *args):
        scored.append(Path(path).name)
        return score(self, path, *args)

    monkeypatch.setattr(TorchBackend, "score", counting_score)
    calls = dict(CALLS)
    run_study(study, run, Reporter(quiet=True))
    assert CALLS["test.boom"] == calls["test.boom"] + 1  # retried: its failure was not cached
    assert CALLS["test.leak"] == calls["test.leak"] and CALLS["test.nan"] == calls["test.nan"]  # steps reused
    again = read_results(run)
    assert {f.variant_id for f in again.failed_variants} == {"a/leak", "a/nan"}
    assert {v.variant_id for v in again.variants} == {"a/fp32", "a/int8_dynamic", "a/boom"}
    # Only the failed variants' losses are scored again; fp32's and int8's come from the cache.
    # (boom returns its input, the fp32 graph, whose loss is cached too.)
    assert len(scored) == 2  # leak's and nan's graphs, each refused on its first split
    assert not set(scored) & {Path(v.onnx_path).name for v in again.variants}
    for vid in ("a/fp32", "a/int8_dynamic"):
        before = next(v for v in results.variants if v.variant_id == vid)
        after = next(v for v in again.variants if v.variant_id == vid)
        assert after.loss == before.loss


def test_a_bug_is_not_a_variant_failure():
    def bug():
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError, match="unsupported operand"):
        attempt("a/fp32", "loss", bug)
    for exc in (KeyboardInterrupt, SystemExit, MemoryError):

        def stop(exc=exc):
            raise exc()

        with pytest.raises(exc):
            attempt("a/fp32", "loss", stop)


def test_expected_failures_are_recorded_with_type_and_message():
    def numerics():
        raise NumericsError("held-out loss on validation is nan")

    got = attempt("a/x", "loss", numerics)
    assert got == VariantFailure("a/x", "loss", "NumericsError", "held-out loss on validation is nan")
    assert got.record().data()["status"] == "failed"
