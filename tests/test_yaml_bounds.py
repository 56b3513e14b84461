"""Hostile YAML (issue 17, cases 1, 4 and 14): nesting deep enough to crash libyaml's composer,
alias bombs, duplicate keys and huge files each get one line and exit 2, before anything is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli

from edgescale.errors import UserError
from edgescale.yamlfile import MAX_BYTES, MAX_DEPTH, read_yaml

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
