"""The user's input files, fully validated: a study (with the recipes and devices it names),
a recipe, a device profile.

Above :mod:`edgescale.config` (the schemas) because a study is valid only if its recipes
compile (:mod:`edgescale.compress.recipe`) and its devices exist (:mod:`edgescale.profiles`).
``edgescale validate FILE...`` runs :func:`validate_file`.
"""

from __future__ import annotations

from pathlib import Path

from edgescale.compress.recipe import load_recipe, load_recipe_file
from edgescale.config import Study, builtin_dir
from edgescale.errors import UserError
from edgescale.models.trust import CodeTrust, trust_line
from edgescale.profiles import load_device_file, load_devices
from edgescale.yamlfile import parse, read_yaml


def load_study(path: Path | None = None) -> tuple[Study, Path]:
    """Load and fully validate a study (the built-in default when ``path`` is None)."""
    path = Path(path) if path is not None else builtin_dir("studies") / "default.yaml"
    study = parse(Study, read_yaml(path), path)
    base = path.parent
    for i, name in enumerate(study.recipes):
        load_recipe(name, base, origin=(path, f"recipes.{i}"))
    known = known_devices()
    devices = [
        _device_file(dev, base, path, i) if dev.endswith((".yaml", ".yml")) else dev
        for i, dev in enumerate(study.devices)
    ]
    for i, dev in enumerate(devices):
        if dev not in known and not dev.endswith((".yaml", ".yml")):
            raise UserError(
                f"unknown device {dev!r}; allowed: {', '.join(sorted(known))} or a profile file (NAME.yaml)",
                file=path,
                field=f"devices.{i}",
            )
    if devices != study.devices:
        study = study.model_copy(update={"devices": devices})
    tok = study.corpus.tokenizer
    if tok != "bytes" and not (base / Path(tok).expanduser() / "tokenizer.json").is_file():
        raise UserError(
            f"{tok!r} is neither 'bytes' nor a folder holding tokenizer.json (paths are relative to the study)",
            file=path,
            field="corpus.tokenizer",
        )
    return study, path


def _device_file(dev: str, base: Path, study_path: Path, i: int) -> str:
    """A study's device given as a profile file (e.g. from ``edgescale calibrate --device-name``), relative
    to the study's folder: loaded and validated here, kept as an absolute path so every stage finds it."""
    file = (base / dev).resolve()
    if not file.is_file():
        raise UserError(
            f"device profile {dev} not found (paths are relative to the study)", file=study_path, field=f"devices.{i}"
        )
    load_device_file(file)  # one message naming the file and field when it is not a valid profile
    return str(file)


def known_devices() -> set[str]:
    """Device names a study may use: ``host`` (measured here) plus the shipped profiles."""
    return {"host", *load_devices()}


def validate_file(path: Path, trust_code: tuple[str, ...] = ()) -> str:
    """Validate one study, recipe or device file; return what it was, and for a study with a
    ``model.factory`` the code it would run (refused unless trusted: :mod:`edgescale.models.trust`).
    Nothing is imported or run."""
    data = read_yaml(path)
    if "steps" in data:
        load_recipe_file(path)
        return "recipe"
    if "peak_gops" in data:
        load_device_file(path)
        return "device"
    if any(k in data for k in ("ladder", "models", "model", "hf_model")):
        study, _ = load_study(path)
        if study.model is not None:
            return f"study; runs code: {trust_line(study.model.factory, CodeTrust.of(path, trust_code))}"
        return "study"
    raise UserError(
        "not a study (needs 'ladder', 'models', 'model' or 'hf_model'), a recipe (needs 'steps') or a device "
        "(needs 'peak_gops')",
        file=path,
    )
