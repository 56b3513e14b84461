"""Issue 17, case 12: a study's ``model.factory`` is code, and runs only when the user trusts it.

Every factory here would leave a marker file if it ran (at import or when called); the refused
cases check that the marker is absent and that nothing was created for the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from cli_runner import run_cli

from edgescale.errors import UserError
from edgescale.models.custom import resolve_factory, vetted_factory
from edgescale.models.trust import CodeTrust

REPO = Path(__file__).resolve().parents[1]
TINY_KW = {"vocab_size": 1000, "d_model": 32, "nhead": 4, "dim_feedforward": 64, "num_layers": 2}


def _study(folder: Path, factory: str, kwargs: dict | None = None) -> Path:
    study = yaml.safe_load((REPO / "studies" / "custom_encoder.yaml").read_text())
    study["model"] |= {"factory": factory, "kwargs": kwargs or TINY_KW, "embed_dim": 32, "block_size": 32}
    study["evaluation"] = {"context_length": 32, "stride": 32, "max_bytes": 1024, "batch_size": 8}
    study["measurement"] = {"prompt_len": 16, "decode_context": 32, "repeats": 3, "warmup": 1, "threads": 1}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _module(folder: Path, name: str, marker: Path) -> str:
    """A factory module that marks its import and its call; returns ``name:make``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        "from pathlib import Path\n"
        "from edgescale.examples.encoder import encoder_lm\n"
        f"Path({str(marker)!r} + '.imported').write_text('x')\n\n"
        "def make(**kw):\n"
        f"    Path({str(marker)!r}).write_text('ran')\n"
        "    return encoder_lm(**kw)\n"
    )
    return f"{name}:make"


def _one_error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def unique(tmp_path) -> str:
    name = f"m_{tmp_path.name.replace('-', '_')}"  # sys.modules outlives a test: one name per test
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("trust", [[], ["--trust-code", "os"]])
def test_os_system_is_refused_even_with_trust(tmp_path, trust):
    marker = tmp_path / "pwned"
    study = _study(tmp_path, "os:system", {"command": f"touch {marker}"})
    for cmd in ("validate", "run"):
        extra = ["--out", tmp_path / "run"] if cmd == "run" else []
        line = _one_error_line(run_cli(cmd, study, *trust, *extra, cwd=tmp_path))
        assert "standard library" in line and ("model.factory" in line or "--trust-code" in line), line
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("factory", ["subprocess:run", "builtins:eval", "shutil:rmtree", "importlib:import_module"])
def test_the_standard_library_and_builtins_are_never_factories(tmp_path, factory):
    with pytest.raises(UserError, match="standard library"):
        resolve_factory(factory, CodeTrust(tmp_path / "study.yaml", modules=(factory.partition(":")[0],)))


def test_an_untrusted_module_is_refused_naming_the_flag_and_never_imported(tmp_path, unique, monkeypatch):
    elsewhere = tmp_path / "site"  # importable, as an installed package would be, but not beside the study
    marker = tmp_path / "ran"
    factory = _module(elsewhere, unique, marker)
    monkeypatch.syspath_prepend(str(elsewhere))
    (tmp_path / "s").mkdir()
    study = _study(tmp_path / "s", factory)
    for cmd in ("validate", "run"):
        extra = ["--out", tmp_path / "run"] if cmd == "run" else []
        line = _one_error_line(run_cli(cmd, study, *extra, cwd=tmp_path))
        assert "not trusted" in line and f"--trust-code {unique}" in line and str(study) in line, line
    assert not marker.exists() and not Path(f"{marker}.imported").exists() and not (tmp_path / "run").exists()
    # named on the command line: validate says what it would run, still without importing it
    r = run_cli("validate", study, "--trust-code", unique, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"runs code: {factory} (installed module, trusted with --trust-code {unique})" in r.stderr
    assert not Path(f"{marker}.imported").exists()


def test_a_module_beside_the_study_runs_and_validate_says_so(tmp_path, unique):
    from edgescale.models.custom import AdaptedLM
    from edgescale.study_inputs import load_inputs

    marker = tmp_path / "ran"
    factory = _module(tmp_path, unique, marker)
    study = _study(tmp_path, factory)
    r = run_cli("validate", study, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"runs code: {factory} (from ./{unique}.py beside the study)" in r.stderr
    assert not Path(f"{marker}.imported").exists()  # validate runs nothing
    [plan] = load_inputs(study).plans
    assert marker.read_text() == "ran"  # planning built the module: the factory ran
    assert AdaptedLM(plan.cfg).inner.__class__.__name__ == "EncoderLM"  # a later build reuses the vetting


def test_a_spec_from_a_file_runs_only_a_factory_vetted_in_this_process(tmp_path, unique, monkeypatch):
    """A checkpoint's metadata names its factory; a forged one must not choose the code that runs."""
    elsewhere = tmp_path / "site"
    marker = tmp_path / "ran"
    factory = _module(elsewhere, unique, marker)
    monkeypatch.syspath_prepend(str(elsewhere))
    with pytest.raises(UserError, match=f"--trust-code {unique}"):
        vetted_factory(factory)
    assert not Path(f"{marker}.imported").exists()


def test_a_trusted_module_cannot_hand_out_a_standard_library_function(tmp_path, unique):
    (tmp_path / f"{unique}.py").write_text("from os import system\n")
    with pytest.raises(UserError, match="standard library's posix.system"):
        resolve_factory(f"{unique}:system", CodeTrust.of(tmp_path / "study.yaml"))


def test_trust_code_names_are_checked():
    with pytest.raises(UserError, match="--trust-code: 'subprocess' is the Python standard library"):
        CodeTrust.of(None, ["subprocess"])
    with pytest.raises(UserError, match="--trust-code: 'a b' is not a module name"):
        CodeTrust.of(None, ["a b"])


def test_the_trust_decision_travels_with_the_backend_to_a_worker(tmp_path, unique):
    """A Ray task unpickles the study's backend: it re-applies the rule it carries before any build."""
    import pickle

    from edgescale.backends.custom import CustomBackend
    from edgescale.inputs import load_study
    from edgescale.models import custom

    factory = _module(tmp_path, unique, tmp_path / "ran")
    study, path = load_study(_study(tmp_path, factory))
    blob = pickle.dumps(CustomBackend(study, None, CodeTrust.of(path)))
    custom._VETTED.discard(unique)  # as in a fresh worker process
    pickle.loads(blob)
    assert unique in custom._VETTED
    refused = CustomBackend(study, None, CodeTrust.of(path))
    refused.trust = CodeTrust(tmp_path / "elsewhere" / "study.yaml")  # a worker told to trust nothing here
    with pytest.raises(UserError, match="not trusted"):
        pickle.loads(pickle.dumps(refused))
