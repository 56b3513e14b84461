"""Shared fixtures: no network except loopback, no files left in the repo, tiny models."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_IGNORED = {".venv", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis", "runs", "__pycache__"}


def _repo_files() -> set[Path]:
    out = set()
    for p in REPO.rglob("*"):
        rel = p.relative_to(REPO)
        if rel.parts and (rel.parts[0] in _IGNORED or "__pycache__" in rel.parts or rel.parts[0].endswith(".egg-info")):
            continue
        out.add(rel)
    return out


@pytest.fixture(scope="session", autouse=True)
def no_files_left_in_repo():
    before = _repo_files()
    yield
    left = sorted(str(p) for p in _repo_files() - before)
    assert not left, f"tests left files in the repo: {left[:10]}"


_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not (host in ("localhost", "::1") or str(host).startswith("127.")):
            raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(scope="session", autouse=True)
def block_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect


@pytest.fixture(scope="session", autouse=True)
def results_store(tmp_path_factory):
    """Finished runs record into a store of the session's own (subprocesses inherit it),
    never into the repo's runs/edgescale.db. Likewise the export cache: one per session,
    shared by every test and subprocess, starting empty as on a fresh clone."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGESCALE_DB", str(tmp_path_factory.mktemp("store") / "edgescale.db"))
    mp.setenv("EDGESCALE_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("EDGESCALE_CORPUS_CACHE", str(tmp_path_factory.mktemp("corpora")))  # tokenized corpora, likewise
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``tests/tiny_study.py``'s study, run once for every test that reads a finished run:
    (study file, run directory, the results store it recorded into, holding only this run).
    It runs as a user runs it, ``edgescale run`` in a subprocess, watched for network use
    (``tests/net_watch.py``: ``net.jsonl`` and, where strace traces, ``strace.txt`` beside the
    run directory), so one run also serves ``tests/test_no_network.py``."""
    import subprocess
    import sys

    import yaml
    from net_watch import traced, watched_env
    from tiny_study import TINY

    root = tmp_path_factory.mktemp("tiny")
    study, db = root / "tiny.yaml", root / "edgescale.db"
    study.write_text(yaml.safe_dump(TINY))
    env = watched_env(root / "hooks", root / "net.jsonl", REPO) | {"EDGESCALE_DB": str(db)}
    cmd = [sys.executable, "-m", "edgescale.cli", "run", str(study), "--out", str(root / "run"), "-q"]
    r = subprocess.run(traced(cmd, root / "strace.txt"), env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return study, root / "run", db


@pytest.fixture(scope="session")
def tiny_cfg():
    from edgescale.models.gpt import GPTConfig

    return GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    from edgescale.models.gpt import GPT

    return GPT(tiny_cfg, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory):
    from edgescale.export.onnx import export_onnx

    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def corpus():
    from edgescale.config import CorpusConfig
    from edgescale.data.corpus import load_corpus

    return load_corpus(CorpusConfig())


@pytest.fixture
def relu_onnx(tmp_path):
    """A valid ONNX file that is not a language model."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path
