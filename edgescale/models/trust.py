"""Which code a study may run: explicit trust for ``model.factory``, as Hugging Face's
``trust_remote_code``.

A factory is code, so a study file alone never decides to run it. A factory runs only from

- a module beside the study file (the user put it there, next to the study that names it);
- a module or package the user names on the command line: ``--trust-code NAME`` covers
  ``NAME`` and its submodules;
- edgescale's own shipped examples (``edgescale.examples``).

The standard library and builtins (``os:system``, ``subprocess:run``, ``builtins:eval``) are
never factories, whatever is trusted. :func:`trust_line` decides without importing anything,
so ``validate`` can say what a study would run without running it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edgescale.errors import UserError

SHIPPED = "edgescale.examples"  # edgescale's own example factories: trusted like edgescale itself
FLAG = "--trust-code"
_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class CodeTrust:
    """The user's trust decision for one study, passed from the command line to every process
    that may build the model (a Ray worker gets it with the backend, never from a file)."""

    study_file: Path | None = None  # modules beside the study file are trusted
    modules: tuple[str, ...] = ()  # --trust-code NAME, each covering its submodules

    @property
    def study_dir(self) -> Path | None:
        return self.study_file.parent if self.study_file is not None else None

    @staticmethod
    def of(study_path: Path | None, names: tuple[str, ...] | list[str] = ()) -> CodeTrust:
        for name in names:
            if not _NAME.match(name):
                raise UserError(f"{name!r} is not a module name (package.module)", field=FLAG)
            if is_stdlib(name):
                raise UserError(f"{name!r} is the Python standard library, never trusted as model code", field=FLAG)
        return CodeTrust(Path(study_path).resolve() if study_path is not None else None, tuple(names))


def is_stdlib(module_name: str) -> bool:
    top = module_name.partition(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__main__"


def beside_study(module_name: str, study_dir: Path | None) -> Path | None:
    """The file or package folder of ``module_name``'s top package in ``study_dir``, if there."""
    if study_dir is None:
        return None
    top = module_name.partition(".")[0]
    for candidate in (study_dir / f"{top}.py", study_dir / top):
        if candidate.is_file() or candidate.is_dir():
            return candidate
    return None


def _covers(name: str, module_name: str) -> bool:
    return module_name == name or module_name.startswith(name + ".")


def trust_line(spec: str, trust: CodeTrust, field: str = "model.factory") -> str:
    """Why ``spec`` (``package.module:function``) may run, e.g. ``mymodule:build (from
    ./mymodule.py beside the study)``; a UserError naming ``--trust-code`` when it may not.
    Imports nothing."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"{spec!r} is not 'package.module:function'", file=trust.study_file, field=field)
    if is_stdlib(module_name) or attr in ("eval", "exec", "compile", "__import__"):
        raise UserError(
            f"{spec!r} is the Python standard library, never a model factory (not even with {FLAG}); "
            "name a function of your own module that returns an nn.Module",
            file=trust.study_file,
            field=field,
        )
    if _covers(SHIPPED, module_name):
        return f"{spec} (edgescale's shipped example)"
    found = beside_study(module_name, trust.study_dir)
    if found is not None:
        return f"{spec} (from ./{found.name} beside the study)"
    name = next((n for n in trust.modules if _covers(n, module_name)), None)
    if name is not None:
        return f"{spec} (installed module, trusted with {FLAG} {name})"
    top = module_name.partition(".")[0]
    raise UserError(
        f"{spec!r} would run code from {module_name!r}, which is not trusted: put {top}.py beside the study "
        f"file, or pass {FLAG} {top} if you trust that installed package",
        file=trust.study_file,
        field=field,
    )
