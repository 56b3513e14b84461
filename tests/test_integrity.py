"""Issue 17, cases 7-9 and a results.json variant with no fields: what `report`, `pick` and
`compare` trust in a run directory (edgescale/results/snapshot.py).

- a truncated or changed artifact is refused, naming the file and the command that rebuilds it;
- a run whose manifest does not say "finished" (killed mid-run), or whose results.json changed
  after the finish, is refused unless --allow-unfinished, and then read under a loud warning;
- `report` takes the run directory's lock: while a run holds it, `report` waits, then refuses,
  and leaves summary.md as it was; once the lock is free it writes a report of the results.json
  it read.

Every mutating test works on a copy of the session's tiny run (tests/conftest.py::tiny_run).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from cli_runner import run_cli

from edgescale.results import snapshot

TARGET = "9"  # bits per byte: every tiny variant meets it, so pick names one


def _copy(tiny_run, tmp_path: Path) -> Path:
    """The tiny run's results, manifest, report and artifacts (not its training state) in ``tmp_path``."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run[1], run, ignore=shutil.ignore_patterns("train", "work", "cache", "quarantine"))
    return run


def _one_error(r, *fragments: str) -> str:
    """The one stderr line of a user error (exit 2, no traceback), holding every fragment."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def _int8(run: Path) -> tuple[dict, Path]:
    results = json.loads((run / "results.json").read_text())
    v = next(v for v in results["variants"] if v["recipe"] == "int8_dynamic")
    return v, run / v["onnx_path"]


def _pick(run: Path, *extra: str):
    return run_cli("pick", run, "--loss-target-bpb", TARGET, "--device", "host", "--json", *extra)


def test_the_finished_manifest_names_the_results_it_finished(tiny_run):
    run = tiny_run[1]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["results_sha256"] == hashlib.sha256((run / "results.json").read_bytes()).hexdigest()


def test_an_intact_run_is_read_without_a_warning(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    r = _pick(run)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    assert Path(json.loads(r.stdout)["variant"]["onnx_file"]).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete"])
def test_a_damaged_artifact_is_never_picked_or_reported(tiny_run, tmp_path, damage):
    """Case 7: the int8 file truncated (or changed in place, or gone) is refused by name; it is
    never picked with its old size, and the report is not rewritten over it."""
    run = _copy(tiny_run, tmp_path)
    v, victim = _int8(run)
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[:1000])
    elif damage == "flip a byte":
        mid = len(data) // 2  # inside the weights
        victim.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    else:
        victim.unlink()
    summary = (run / "summary.md").read_bytes()
    for r in (_pick(run), run_cli("report", run), run_cli("compare", run, "--json")):
        _one_error(r, str(victim), v["variant_id"], "edgescale run", "--out")
        assert not r.stdout
    # even --allow-unfinished (which only waives the finished marker) does not let it through
    _one_error(_pick(run, "--allow-unfinished"), str(victim))
    assert (run / "summary.md").read_bytes() == summary


def test_a_damaged_artifact_of_a_stored_run_is_refused_by_all_runs(tiny_run, tmp_path):
    run, db = _copy(tiny_run, tmp_path), tmp_path / "store.db"
    assert run_cli("runs", "--add", run, "--db", db).returncode == 0
    _, victim = _int8(run)
    victim.write_bytes(victim.read_bytes()[:1000])
    r = run_cli("pick", "--all-runs", "--db", db, "--loss-target-bpb", TARGET, "--device", "host", "--json")
    _one_error(r, str(victim.resolve()), "fails its hash check")


def test_a_hash_in_results_that_the_manifest_does_not_list_is_refused(tiny_run, tmp_path):
    """results.json edited to vouch for another file: the manifest's artifact list disagrees."""
    run = _copy(tiny_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    v, victim = _int8(run)
    manifest["artifacts"][v["onnx_path"]] = "f" * 64
    (run / "manifest.json").write_text(json.dumps(manifest))
    _one_error(_pick(run), "results.json", "manifest.json record different hashes", v["onnx_path"])


def _set_manifest(run: Path, **changes) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def test_a_killed_run_is_refused_then_read_loudly_when_allowed(tiny_run, tmp_path):
    """Case 8: a complete-looking results.json beside a manifest that still says "running"."""
    run = _copy(tiny_run, tmp_path)
    _set_manifest(run, status="running")
    summary = (run / "summary.md").read_bytes()
    for r in (_pick(run), run_cli("report", run), run_cli("compare", run)):
        _one_error(r, str(run / "manifest.json"), "status: the run did not finish", "'running'", "--allow-unfinished")
    assert (run / "summary.md").read_bytes() == summary
    r = _pick(run, "--allow-unfinished")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "UNFINISHED RUN" in r.stderr
    assert json.loads(r.stdout)["status"] == "ok"  # stdout stays one JSON object
    r = run_cli("report", run, "--allow-unfinished", "--out", tmp_path / "out")
    assert r.returncode == 0 and "UNFINISHED RUN" in r.stderr, r.stderr


def test_results_rewritten_after_the_finish_are_refused(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    results["variants"] = results["variants"][:1]  # still valid, no longer what the run finished
    (run / "results.json").write_text(json.dumps(results))
    _one_error(_pick(run), str(run / "manifest.json"), "results.json changed after the run finished")
    _one_error(run_cli("report", run), "results_sha256", "--allow-unfinished")


def test_a_run_without_the_marker_of_older_runs_is_read(tiny_run, tmp_path):
    """A run finished before results_sha256 was recorded is still a finished run."""
    run = _copy(tiny_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["results_sha256"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert _pick(run).returncode == 0


@pytest.fixture
def held_lock(tmp_path):
    """Take the run directory's lock as `edgescale run` does (exclusive), in this process."""
    fds = []

    def take(run: Path, mode=fcntl.LOCK_EX) -> int:
        fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        fds.append(fd)
        return fd

    yield take
    for fd in fds:
        os.close(fd)


def test_report_waits_for_a_run_then_refuses_and_leaves_the_files(tiny_run, tmp_path, held_lock, monkeypatch):
    """Case 9: while a run holds the lock, report (and pick) wait LOCK_WAIT_S, then refuse in one line."""
    monkeypatch.setattr(snapshot, "LOCK_WAIT_S", 0.3)
    run = _copy(tiny_run, tmp_path)
    before = {p.name: p.read_bytes() for p in (run / "summary.md", run / "report.html", run / "results.json")}
    held_lock(run)
    for r in (run_cli("report", run), run_cli("report", run, "--out", tmp_path / "out"), _pick(run)):
        _one_error(r, str(run), "another edgescale process", "wait for it to finish")
    assert {p: (run / p).read_bytes() for p in before} == before
    assert not (tmp_path / "out").exists()


def test_readers_share_the_lock_and_report_waits_for_it(tiny_run, tmp_path, held_lock, monkeypatch):
    """A shared lock (another pick) lets pick read; report, which writes in the run directory,
    waits for it and then writes a summary of the very results.json it read."""
    monkeypatch.setattr(snapshot, "LOCK_WAIT_S", 30.0)
    run = _copy(tiny_run, tmp_path)
    fd = held_lock(run, fcntl.LOCK_SH)
    assert _pick(run).returncode == 0
    (run / "summary.md").unlink()
    timer = threading.Timer(0.5, lambda: fcntl.flock(fd, fcntl.LOCK_UN))
    timer.start()
    try:
        r = run_cli("report", run)
    finally:
        timer.join()
    assert r.returncode == 0, r.stderr
    assert (run / "summary.md").read_bytes() == (tiny_run[1] / "summary.md").read_bytes()


def test_a_symlinked_lock_is_refused(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(tmp_path / "elsewhere")
    _one_error(_pick(run), str(run / ".lock"), "symbolic link")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("bad", [{}, None, {"cost": None}, {"cost": 1}, []])
@pytest.mark.parametrize("version", [2, 1])
def test_a_variant_with_no_fields_is_one_line(tiny_run, tmp_path, bad, version):
    """Case 5: report/pick on a results.json with a variant `{}` (or null, or a cost that is not
    an object, in a current or a version-1 file): one line naming the file and the variant."""
    data = json.loads((tiny_run[1] / "results.json").read_text())
    if version == 1:
        data.pop("schema_version")
    data["variants"].append(bad)
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(data))
    n = len(data["variants"]) - 1
    for r in (run_cli("report", run, "--out", tmp_path / "out"), _pick(run)):
        _one_error(r, str(run / "results.json"), f"variants.{n}", "not a valid edgescale results.json")


def test_results_without_a_manifest_are_read_with_a_warning(tiny_run, tmp_path):
    """A results.json handed over on its own: nothing to check the finish or the artifacts against, said so."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run[1] / "results.json", run)
    r = run_cli("report", run, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "no manifest.json" in r.stderr


def test_deleting_the_manifest_does_not_get_a_damaged_or_outside_file_picked(tiny_run, tmp_path):
    """The audit's bypass: with manifest.json removed, pick refused (nothing proves the run finished);
    with --allow-unfinished the files are still hashed, and a path out of the run directory is refused
    by every reader, manifest or not."""
    run = _copy(tiny_run, tmp_path)
    (run / "manifest.json").unlink()
    _one_error(_pick(run), "manifest.json", "--allow-unfinished")
    _one_error(run_cli("compare", run, "--json"), "manifest.json", "--allow-unfinished")
    v, path = _int8(run)
    path.write_bytes(path.read_bytes()[:1000])
    _one_error(_pick(run, "--allow-unfinished"), str(path), "fails its hash check")
    results = json.loads((run / "results.json").read_text())
    results["variants"][1]["onnx_path"] = "/etc/passwd"
    (run / "results.json").write_text(json.dumps(results))
    for r in (_pick(run, "--allow-unfinished"), run_cli("report", run, "--out", tmp_path / "out")):
        _one_error(r, "onnx_path", "outside the run directory")


def test_a_results_file_linked_from_outside_is_refused(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    outside = tmp_path / "elsewhere.json"
    (run / "results.json").rename(outside)
    (run / "results.json").symlink_to(outside)
    for r in (_pick(run), run_cli("report", run, "--out", tmp_path / "out")):
        _one_error(r, "results.json", "outside the run directory")
