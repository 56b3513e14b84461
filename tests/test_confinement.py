"""Issue 17, cases 6, 10 and 11: nothing read or written outside the run directory, and one
error line (exit 2) for a read-only, full or forbidden disk.

The symlink and disk cases stop before any training (at the lock, or at the first write), so
each CLI run here costs only loading the tiny study's inputs."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml
from cli_runner import run_cli
from tiny_study import TINY

from edgescale.errors import EnvironmentFailure, UserError
from edgescale.rundir import RunDir


@pytest.fixture
def study(tmp_path) -> Path:
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump(TINY))
    return f


def _one_error_line(res, *words: str) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# -- case 10: links out of the run directory ------------------------------------------------------
@pytest.mark.parametrize("link", ["train/a", "work", "artifacts", "cache", "nll", ".lock", "cache/k.json"])
def test_run_refuses_a_run_directory_with_a_link_out(tmp_path, study, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    (run / link).parent.mkdir(parents=True, exist_ok=True)
    target = outside / "f" if link.endswith((".lock", ".json")) else outside
    (run / link).symlink_to(target)
    res = run_cli("run", study, "--out", run, "--quiet", env={"EDGESCALE_DB": str(tmp_path / "db")})
    line = _one_error_line(res, "symbolic link", "--out")
    assert str(run / link) in line
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert (run / link).is_symlink()  # and the link itself left alone


def test_a_link_made_after_the_lock_is_refused_on_use(tmp_path):
    """RunDir.inside resolves links on every path, not only when the lock is taken."""
    outside = tmp_path / "outside"
    outside.mkdir()
    with RunDir(tmp_path / "run") as rd:
        for name in ("work", "train", "artifacts", "cache"):
            (rd.root / name).symlink_to(outside)
        with pytest.raises(EnvironmentFailure, match="symbolic link"):
            rd.work_dir("0" * 64)
        with pytest.raises(EnvironmentFailure, match="symbolic link"):
            rd.path("train", "a")
        with pytest.raises(EnvironmentFailure, match="symbolic link"):
            rd.record("k", {"x": 1})
        src = tmp_path / "m.bin"
        src.write_bytes(b"weights")
        with pytest.raises(EnvironmentFailure, match="symbolic link"):
            rd.store(src)
        (outside / "k.json").write_text(json.dumps({"_artifacts": {}}))
        with pytest.raises(EnvironmentFailure, match="symbolic link"):
            rd.cached("k")
    assert sorted(p.name for p in outside.iterdir()) == ["k.json"]


def test_links_that_stay_inside_are_allowed(tmp_path):
    run = tmp_path / "run"
    (run / "real").mkdir(parents=True)
    (run / "work").symlink_to(run / "real")
    with RunDir(run) as rd:
        assert rd.work_dir("1" * 64).resolve().is_relative_to(run / "real")


# -- case 11: forged cache records ------------------------------------------------------------------
def _forge(rd: RunDir, key: str, rec: dict) -> Path:
    p = rd.path("cache", f"{key}.json")
    p.write_text(json.dumps(rec))
    return p


@pytest.mark.parametrize(
    "forged",
    [
        {"artifact": "/etc/passwd"},
        {"artifact": "../elsewhere/model.onnx"},
        {"checkpoint": "artifacts/../../x.safetensors"},
        {"onnx_path": "/tmp/x.onnx"},
        {"nll_file": "../x.npz"},
        {"files": ["report.html", "/tmp/report.html"]},
        {"steps": [{"op": "export.onnx", "artifact": "/abs/model.onnx"}]},
        {"branches": [{"checkpoint": "../../b.safetensors", "sha256": "0" * 64}]},
    ],
)
def test_a_record_naming_a_path_outside_is_not_reused(tmp_path, forged):
    warnings: list[str] = []
    with RunDir(tmp_path / "run", log=warnings.append) as rd:
        stored = rd.path("artifacts", "good.bin")
        stored.write_bytes(b"x")
        from edgescale.export.canonical import artifact_sha256

        good = {"artifacts/good.bin": artifact_sha256(stored)}
        rec = {"artifact": "artifacts/good.bin", "sha256": good["artifacts/good.bin"], **forged}
        # listed among the hashed artifacts (else refused as unhashed): the confinement check refuses it
        arts = good | {forged[k]: "0" * 64 for k in ("artifact", "checkpoint") if k in forged}
        p = _forge(rd, "k", {**rec, "_artifacts": arts})
        assert rd.cached("k") is None
        assert not p.exists() and (rd.root / "quarantine" / "k.json").exists()
        assert warnings and "redoing its work" in warnings[-1]


def test_a_record_whose_artifact_it_does_not_hash_is_not_reused(tmp_path):
    """``artifact`` must be one of the files the record's hashes cover, or nothing checks it."""
    with RunDir(tmp_path / "run") as rd:
        rd.path("artifacts", "other.onnx").write_bytes(b"y")
        _forge(rd, "k", {"artifact": "artifacts/other.onnx", "sha256": "0" * 64, "_artifacts": {}})
        assert rd.cached("k") is None


def test_a_genuine_record_is_still_reused(tmp_path):
    with RunDir(tmp_path / "run") as rd:
        p = rd.path("artifacts", "m.bin")
        p.write_bytes(b"weights")
        from edgescale.export.canonical import artifact_sha256

        sha = artifact_sha256(p)
        rec = {"checkpoint": "artifacts/m.bin", "sha256": sha, "branches": [], "source": {"path": "/home/me/model"}}
        rd.record("k", rec, {"artifacts/m.bin": sha})
        assert rd.cached("k")["checkpoint"] == "artifacts/m.bin"


# -- case 6: read-only, full, forbidden ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, ("read-only", "--out")),
        (errno.EACCES, ("permission denied", "--out")),
        (errno.ENOSPC, ("free space",)),
    ],
)
def test_an_unwritable_lock_is_one_line(tmp_path, study, monkeypatch, code, words):
    """Simulated (tests may run as root, where chmod does not stop a write)."""
    real_open = os.open

    def failing_open(path, flags, *args, **kwargs):
        if Path(path).name == ".lock":
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    res = run_cli("run", study, "--out", tmp_path / "run", "--quiet", env={"EDGESCALE_DB": str(tmp_path / "db")})
    _one_error_line(res, ".lock", *words)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_run_directory_is_one_line(tmp_path, study):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        res = run_cli("run", study, "--out", run, "--quiet", env={"EDGESCALE_DB": str(tmp_path / "db")})
    finally:
        run.chmod(0o755)
    _one_error_line(res, str(run), "--out")


def test_a_full_disk_at_the_first_write_is_one_line(tmp_path, study, monkeypatch):
    run = tmp_path / "run"
    real = Path.write_bytes

    def full(self, data):
        if self.is_relative_to(run):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    res = run_cli("run", study, "--out", run, "--quiet", env={"EDGESCALE_DB": str(tmp_path / "db")})
    _one_error_line(res, "manifest.json", "no space left", "free space")
    assert not [p for p in run.rglob("*.tmp")]  # the temp file of the failed write is gone


@pytest.mark.parametrize(
    "text",
    [
        "Error while serializing: I/O error: No space left on device (os error 28)",  # safetensors 0.7, a full disk
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',
    ],
)
def test_a_full_disk_under_safetensors_is_one_error(tmp_path, monkeypatch, text):
    """safetensors reports ENOSPC as its own error type, with the errno only in its text."""
    import torch
    from safetensors import SafetensorError

    from edgescale.models import checkpoint

    def full(*args, **kwargs):
        raise SafetensorError(text)

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(EnvironmentFailure, match="no space left"):
        checkpoint.save_model(torch.nn.Linear(2, 2), tmp_path / "m.safetensors", {})
    assert list(tmp_path.iterdir()) == []


def test_a_run_on_a_really_full_disk_is_one_error(tmp_path):
    """The audit's case: ``edgescale run`` into a 20 KB tmpfs (where mounting is allowed: root here)."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        study = tmp_path / "tiny.yaml"
        study.write_text(yaml.safe_dump(TINY))
        res = run_cli("run", str(study), "--out", str(mnt / "run"), "-q")
        _one_error_line(res, "no space left", "free space")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_an_oserror_of_another_kind_is_not_hidden(tmp_path):
    """Only read-only, full and forbidden become one line; anything else keeps its traceback."""
    from edgescale.atomic import environment

    with pytest.raises(FileNotFoundError), environment(tmp_path):
        raise FileNotFoundError(errno.ENOENT, "gone", str(tmp_path / "x"))
    with pytest.raises(ValueError), environment(tmp_path):
        raise ValueError("a bug")


def test_an_environment_failure_stops_the_study_rather_than_one_variant():
    from edgescale.pipeline import is_variant_failure

    assert is_variant_failure(UserError("bad step input"))
    assert not is_variant_failure(EnvironmentFailure("no space left"))


def test_a_raw_oserror_reaching_the_cli_is_one_line(tmp_path, monkeypatch):
    """A write not routed through edgescale.atomic still ends as one line naming its path."""

    def boom(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "somewhere.png"))

    monkeypatch.setattr("edgescale.run.run_study", boom)
    res = run_cli("run", tmp_path / "any.yaml", "--quiet")
    _one_error_line(res, "somewhere.png", "read-only")


# -- case 6: the quantizer's shape-inference temp file ------------------------------------------------
def test_quantizer_temp_files_stay_out_of_artifacts(tiny_onnx, tmp_path, monkeypatch):
    import onnx

    from edgescale.compress.quantize import Int8DynamicConfig, int8_dynamic
    from edgescale.compress.registry import StepContext

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    src = artifacts / "abc.onnx"
    src.write_bytes(Path(tiny_onnx).read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    written: list[Path] = []
    real = onnx.shape_inference.infer_shapes_path

    def spy(model_path, output_path="", *args, **kwargs):
        written.append(Path(output_path))
        return real(model_path, output_path, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", spy)
    ctx = StepContext(work_dir=work, seed=0, log=lambda m: None)
    out = int8_dynamic(src, Int8DynamicConfig(), ctx)
    assert out.is_relative_to(work)
    # beside its input (in work/), or in onnxruntime's own temp folder: never beside the artifact
    assert any(p.is_relative_to(work) for p in written)
    assert not any(p.is_relative_to(artifacts) for p in written)
    assert sorted(p.name for p in artifacts.iterdir()) == ["abc.onnx"]


def test_a_left_over_inferred_file_is_removed_under_the_lock(tmp_path):
    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    (run / "artifacts" / "0123-inferred.onnx").write_bytes(b"trunc")
    (run / "artifacts" / "0123.onnx").write_bytes(b"kept")
    with RunDir(run):
        pass
    assert sorted(p.name for p in (run / "artifacts").iterdir()) == ["0123.onnx"]


def test_a_truncated_inference_copy_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """The quantizer's misleading DecodeError (onnx wrote a truncated copy) is a full disk when it is one."""
    import shutil

    from google.protobuf.message import DecodeError

    from edgescale.compress import onnx_graph

    src = tmp_path / "m.onnx"
    src.write_bytes(b"x" * 100)
    for free, raised in ((0, EnvironmentFailure), (10**9, DecodeError)):
        monkeypatch.setattr(shutil, "disk_usage", lambda p, free=free: type("U", (), {"free": free})())
        with pytest.raises(raised), onnx_graph.disk_full_as_failure(src, tmp_path):
            raise DecodeError("Error parsing message with type 'onnx.ModelProto'")


def test_the_export_cache_survives_a_full_disk_and_a_truncated_entry(tmp_path, monkeypatch):
    """The per-user export cache is an optimisation: a failed write or a damaged entry exports afresh."""
    from edgescale.export import cache

    monkeypatch.setenv("EDGESCALE_CACHE", str(tmp_path))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(Path, "write_bytes", full)
    cache._save("k", None)  # warned, not raised
    monkeypatch.undo()
    monkeypatch.setenv("EDGESCALE_CACHE", str(tmp_path))
    folder = cache.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "k.json").write_text(json.dumps({"format": 2, "proven": True, "digests": [], "slots": []}))
    (folder / "k.onnx").write_bytes(b"\x0a\xff\xff")  # truncated protobuf
    assert cache.load("k") is None
