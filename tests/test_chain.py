"""The one chain runner: each step cached under (op, config, the backend's key input), reused on a rerun,
and the backend picked once per study."""

from __future__ import annotations

from pathlib import Path

from edgescale.backends import GPTBackend, backend_for
from edgescale.chain import ChainStart, ScratchStore, run_chain
from edgescale.compress.registry import Chain, build_step
from edgescale.export.canonical import file_sha256
from edgescale.hf.onnx_file import OnnxFileBackend
from edgescale.progress import Reporter
from edgescale.rundir import RunDir


class _Counting(Reporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.reused: list[str] = []

    def reuse(self, what: str, detail: str) -> None:
        self.reused.append(what)


class _WithContext(OnnxFileBackend):
    def step_input(self, sha256: str) -> str:
        return f"{sha256}:other-context"


def _chain() -> Chain:
    return Chain("fp16", (build_step("quantize.fp16", {}, "test", "steps.0"),))


def test_a_rerun_reuses_every_step_and_another_context_does_not(tiny_onnx, tmp_path):
    start = ChainStart(str(Path(tiny_onnx).resolve()), file_sha256(tiny_onnx))
    with RunDir(tmp_path / "run") as rd:
        first = run_chain(OnnxFileBackend(), _chain(), start, rd, _Counting(), "tiny")
        rep = _Counting()
        again = run_chain(OnnxFileBackend(), _chain(), start, rd, rep, "tiny")
        assert rep.reused == ["tiny/fp16: quantize.fp16"] and again == first
        rep = _Counting()
        other = run_chain(_WithContext(), _chain(), start, rd, rep, "tiny")
        assert rep.reused == [] and other.sha256 == first.sha256  # recomputed, the same bytes
    assert first.last_op == "quantize.fp16" and first.checkpoint == start.artifact  # no torch-stage output
    assert (tmp_path / "run" / first.artifact).is_file()


def test_a_scratch_store_keeps_nothing_but_the_steps_outputs(tiny_onnx, tmp_path):
    start = ChainStart(str(Path(tiny_onnx).resolve()), file_sha256(tiny_onnx))
    run = run_chain(OnnxFileBackend(), _chain(), start, ScratchStore(tmp_path), Reporter(quiet=True), "tiny")
    assert Path(run.artifact).parent == tmp_path / "0" and run.sha256 == file_sha256(run.artifact)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0"]


def test_a_ladder_study_gets_the_gpt_backend_and_its_plans(tmp_path):
    from tiny_study import TINY

    from edgescale.config import Study
    from edgescale.data.corpus import load_corpus

    study = Study.model_validate(TINY)
    corpus = load_corpus(study.corpus, tmp_path)
    backend = backend_for(study, tmp_path / "study.yaml", corpus, [])
    assert isinstance(backend, GPTBackend)
    plans = backend.plans(lambda n: (n, "test"))
    assert [p.name for p in plans] == ["a", "b"]
    assert all(p.shape["model"] == "gpt" and p.tokens == p.acct.params_total for p in plans)
