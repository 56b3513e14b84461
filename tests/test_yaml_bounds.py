"""Hostile YAML (issue 17, cases 1, 4 and 14): nesting deep enough to crash libyaml's composer,
alias bombs, duplicate keys and huge files each get one line and exit 2, before anything is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli

from edgescale.errors import UserError
from edgescale.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_EXPANDED_BYTES, read_yaml

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)


def _nested(levels: int) -> str:
    return "a: " + "[" * levels + "]" * levels + "\n"


@pytest.mark.parametrize("command", [["validate"], ["run"], ["predict", "--params", "1e6", "--bits", "8", "--device"]])
def test_deep_nesting_is_one_line_and_exit_2_not_a_segfault(tmp_path, command):
    deep = tmp_path / "deep.yaml"
    deep.write_text(_nested(30_000))  # 60 KB: libyaml's C composer recursed until exit 139
    r = subprocess.run(
        [sys.executable, "-m", "edgescale.cli", *command, str(deep)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and f"nested deeper than {MAX_DEPTH} levels" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("runs"))


def test_nesting_up_to_the_bound_reads(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text(_nested(MAX_DEPTH - 1))  # the top-level mapping is one level
    assert read_yaml(ok)["a"] is not None
    (tmp_path / "over.yaml").write_text(_nested(MAX_DEPTH))
    with pytest.raises(UserError, match="nested deeper"):
        read_yaml(tmp_path / "over.yaml")


def test_an_alias_bomb_in_model_kwargs_is_refused_by_validate(tmp_path):
    study = tmp_path / "bomb.yaml"
    kwargs = "\n".join("    " + line for line in LAUGHS.splitlines())
    study.write_text(f"name: bomb\nmodel:\n  factory: 'edgescale.examples.encoder:encoder_lm'\n  kwargs:\n{kwargs}\n")
    r = run_cli("validate", study, cwd=tmp_path)
    assert r.returncode == 2 and "alias" in r.stderr and "Traceback" not in r.stderr
    assert str(study) in r.stderr


def test_a_few_shared_aliases_still_read(tmp_path):
    f = tmp_path / "merge.yaml"
    f.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\nagain: *b\n")
    assert read_yaml(f) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}, "again": {"x": 1, "y": 2}}


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("name: x\nseed: 1\nname: y\n")
    with pytest.raises(UserError, match=r"line 3.*duplicate key 'name' \(first on line 1\)"):
        read_yaml(f)
    nested = tmp_path / "nested.yaml"
    nested.write_text("training:\n  seeds: 1\n  seeds: 2\n")
    with pytest.raises(UserError, match="duplicate key 'seeds'"):
        read_yaml(nested)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    f = tmp_path / "huge.yaml"
    f.write_text("a: [" + ",".join(["1"] * (MAX_BYTES // 2 + 1)) + "]\n")
    r = run_cli("validate", f, cwd=tmp_path)
    assert r.returncode == 2 and "larger than" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_every_shipped_yaml_file_is_within_the_bounds():
    repo = Path(__file__).resolve().parents[1]
    files = [p for d in ("studies", "recipes", "devices") for p in (repo / d).glob("*.yaml")]
    assert files and all(isinstance(read_yaml(p), dict) for p in files)


def _read_in_thread(path: Path, seconds: float = 20) -> BaseException | dict | None:
    """read_yaml(path) in a daemon thread: what it raised or returned, or None if it hung (a FIFO's open)."""
    import threading

    box: list = []

    def target() -> None:
        try:
            box.append(read_yaml(path))
        except BaseException as e:  # noqa: BLE001 - handed back to the test, which checks its type
            box.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return box[0] if box else None


def _special_files(tmp_path: Path) -> dict[str, Path]:
    import os

    fifo = tmp_path / "study.fifo"
    os.mkfifo(fifo)  # no writer: open() for reading blocks forever
    found = {"fifo": fifo, "folder": tmp_path}
    found.update({p.name: p for p in (Path("/dev/zero"), Path("/dev/urandom")) if p.exists()})
    return found


def test_a_device_pipe_or_folder_is_refused_without_being_opened(tmp_path):
    """/dev/zero grew to GBs, `<(yes 'a: 1')` too, and a FIFO with no writer hung in open()."""
    for name, path in _special_files(tmp_path).items():
        got = _read_in_thread(path)
        assert isinstance(got, UserError), (name, got)
        assert "not a regular file" in str(got) and str(path) in str(got), str(got)


def test_process_substitution_and_a_fifo_are_one_line_from_the_cli(tmp_path):
    fifo = _special_files(tmp_path)["fifo"]
    for command in (["validate", fifo], ["run", fifo, "--out", tmp_path / "r"]):
        r = subprocess.run(
            [sys.executable, "-m", "edgescale.cli", *map(str, command)], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and "not a regular file" in r.stderr
    r = subprocess.run(  # bash's <(yes 'a: 1'): a pipe that never ends
        ["bash", "-c", f"exec {sys.executable} -m edgescale.cli validate <(yes 'a: 1')"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "not a regular file" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_file_that_grows_after_the_check_is_read_only_up_to_the_cap(tmp_path, monkeypatch):
    import os
    import tracemalloc

    big = tmp_path / "grows.yaml"
    with big.open("wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MB of NUL bytes that cost no disk
    real_stat = Path.stat

    def small_stat(self, *args, **kwargs):  # the size it had when checked, before it grew
        st = real_stat(self, *args, **kwargs)
        return os.stat_result((st.st_mode, *st[1:6], 100, *st[7:])) if self == big else st

    monkeypatch.setattr(Path, "stat", small_stat)
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="larger than"):
            read_yaml(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MAX_BYTES, f"read {peak:,} bytes into memory for a {MAX_BYTES:,}-byte cap"


def test_a_byte_size_alias_bomb_is_refused(tmp_path):
    """20,000 aliases of a 900 KB string passed: the node cap counts values, not bytes."""
    anchor_len = 100_000
    n = MAX_EXPANDED_BYTES // anchor_len + 10
    f = tmp_path / "strbomb.yaml"
    f.write_text(f"name: bomb\ns: &s '{'x' * anchor_len}'\nl: [{', '.join(['*s'] * n)}]\n")
    assert f.stat().st_size < MAX_BYTES
    r = run_cli("validate", f, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and str(f) in r.stderr
    assert f"more than {MAX_EXPANDED_BYTES:,} bytes" in r.stderr
    nested = tmp_path / "nested.yaml"  # the bytes an anchored collection stands for count at every alias
    nested.write_text(
        f"a: &a ['{'y' * anchor_len}', z]\nb: &b [{', '.join(['*a'] * 20)}]\nc: [{', '.join(['*b'] * 10)}]\n"
    )
    with pytest.raises(UserError, match="bytes of text"):
        read_yaml(nested)
    ok = tmp_path / "ok.yaml"  # the same string a few times is fine
    ok.write_text(f"s: &s '{'x' * anchor_len}'\nl: [*s, *s, *s]\n")
    assert len(read_yaml(ok)["l"]) == 3


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: tiny\nseed: 1\n\0", "line 3, column 1"),  # a NUL appended to a valid file
        ("name: ti\0ny\n", "line 1, column 9"),
        ("a: [1, 2\nb: 3\n", "line "),  # a problem with a context ("while parsing a flow sequence")
        ('a: "\\q"\n', "line 1"),
        ("a:\n\tb: 1\n", "line 2"),
    ],
)
def test_every_yaml_error_is_one_line_with_its_line_and_column(tmp_path, text, where):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = run_cli("validate", f, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {f}: invalid YAML: ") and where in lines[0], lines[0]
    assert "<unicode string>" not in lines[0]
