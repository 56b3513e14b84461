"""Untrusted files never run code, and nothing read from a file writes outside the run directory.

- the source holds no unsafe deserializer (pickle, torch.load without weights_only,
  yaml.load/unsafe_load, numpy with allow_pickle, eval/exec): checked on the AST;
- a pickle that would run a command when unpickled, handed over as a checkpoint, is refused
  and the command never runs; so is a YAML python tag;
- paths in run-directory files (cache records) and names in configs cannot reach outside
  the run directory.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from edgescale.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1] / "edgescale"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else None
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            attr = f.attr if isinstance(f, ast.Attribute) else None
            kw = {k.arg: k.value for k in node.keywords}
            yield node, name, owner, attr, kw


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_safe_loader(node) -> bool:
    """``Loader=yaml.SafeLoader``, ``yaml.CSafeLoader`` or a module alias of one (``_SafeLoader``)."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.endswith("SafeLoader")


def test_source_has_no_unsafe_deserializer():
    found = []
    for py in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(py.read_text(), str(py))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            bad = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
            if bad & {n.split(".")[0] for n in names} or (mod and mod.split(".")[0] in bad):
                found.append(f"{py}:{node.lineno}: imports a pickle-family module")
        for node, name, owner, attr, kw in _calls(tree):
            where = f"{py}:{node.lineno}"
            if owner == "torch" and attr == "load" and not _is_true(kw.get("weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
            unsafe_yaml = attr in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all")
            if owner == "yaml" and unsafe_yaml and not (attr == "load" and _is_safe_loader(kw.get("Loader"))):
                found.append(f"{where}: yaml.{attr} (use yaml.safe_load)")
            if owner in ("np", "numpy") and attr == "load" and _is_true(kw.get("allow_pickle")):
                found.append(f"{where}: numpy load with allow_pickle=True")
            if name in ("eval", "exec"):
                found.append(f"{where}: {name}()")
    assert not found, "\n".join(found)


class _RunsACommand:
    """Unpickling this object runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 0", "pickle protocol 5"])
def test_a_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path, how):
    from edgescale.models.checkpoint import load_model

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.safetensors"  # the suffix lies
    if how == "torch.save":
        torch.save({"w": _RunsACommand(marker)}, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(_RunsACommand(marker), protocol=int(how[-1])))
    with pytest.raises(UserError, match=str(ckpt)):
        load_model(ckpt)
    assert not marker.exists()


def test_yaml_python_tags_are_refused_and_never_run(tmp_path):
    from edgescale.inputs import validate_file

    marker = tmp_path / "pwned"
    bad = tmp_path / "study.yaml"
    bad.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nladder: {{}}\n')
    with pytest.raises(UserError, match="invalid YAML"):
        validate_file(bad)
    assert not marker.exists()
    with pytest.raises(yaml.YAMLError):  # what a yaml.load(Loader=UnsafeLoader) would have run
        yaml.safe_load(bad.read_text())


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path, monkeypatch):
    from edgescale import yamlfile
    from edgescale.inputs import validate_file

    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "recipe.yaml"
    bomb.write_text("name: bomb\n" + "\n".join(lines) + "\nsteps: *a8\n")  # 9^9 leaves if expanded
    with pytest.raises(UserError, match="alias bomb"):  # the reader's bound, before anything is built
        validate_file(bomb)
    monkeypatch.setattr(yamlfile, "MAX_NODES", 10**12)  # past the bound, validation still never expands it
    monkeypatch.setattr(yamlfile, "MAX_EXPANDED_BYTES", 10**15)  # (its bound in bytes, too)
    with pytest.raises(UserError, match="steps"):
        validate_file(bomb)


def test_cache_record_naming_a_file_outside_the_run_directory_is_quarantined(tmp_path):
    """A tampered record must not make the run hash, move or quarantine a file elsewhere."""
    from edgescale.rundir import RunDir

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    run = tmp_path / "run"
    with RunDir(run) as rd:
        rec = rd.path("cache", "k.json")
        rec.write_text(json.dumps({"_artifacts": {"../precious.txt": "0" * 64}}))
        assert rd.cached("k") is None
        assert outside.read_text() == "keep me"
        assert (run / "quarantine" / "k.json").exists() and not rec.exists()
        for parts in (("..", "x"), ("/etc", "passwd"), ("cache", "..", "..", "x")):
            with pytest.raises(UserError, match="leaves the run directory"):
                rd.path(*parts)
        (run / "link").symlink_to(tmp_path)
        with pytest.raises(UserError, match="leaves the run directory"):
            rd.path("link", "precious.txt")


def _study(name: str = "ok", size: str = "s0") -> dict:
    return {
        "name": name,
        "ladder": {"block_size": 32, "sizes": [{"name": size, "n_layer": 1, "n_head": 1, "n_embd": 16}]},
    }


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_study(name="../escape"), "name"),
        (_study(name="a/b"), "name"),
        (_study(size="../../x"), "ladder.sizes.0.name"),
        (_study(size="/abs"), "ladder.sizes.0.name"),
    ],
)
def test_names_from_a_study_cannot_be_paths(tmp_path, doc, field):
    """Studies and sizes name folders (runs/<study>/, train/<size>/): no separators, no '..'."""
    from edgescale.inputs import validate_file

    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=field.replace(".", r"\.") + ": String should match pattern"):
        validate_file(f)


def test_a_yaml_alias_bomb_in_a_file_with_renamed_keys_is_refused_quickly(tmp_path, monkeypatch):
    """Device profiles declare a renamed key (prompt_tokens): the rename walk visits each YAML node
    once, so a bomb under a field it walks costs what its text costs, not 9^9 visits (checked with
    the reader's own bound on expanded size lifted: that bound refuses it first)."""
    import time

    from edgescale import yamlfile
    from edgescale.inputs import validate_file

    monkeypatch.setattr(yamlfile, "MAX_NODES", 10**12)
    monkeypatch.setattr(yamlfile, "MAX_EXPANDED_BYTES", 10**15)

    lines = ['a0: &a0 [{"prompt_tokens": 1}, {"prompt_tokens": 2}, 3, 4, 5, 6, 7, 8, 9]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "device.yaml"
    bomb.write_text("id: bomb\npeak_gops: {}\n" + "\n".join(lines) + "\ncalibration: *a8\n")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="Field required"):
        validate_file(bomb)
    assert time.perf_counter() - t0 < 30  # expanded, it is 9^9 nodes: hours
