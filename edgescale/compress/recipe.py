"""Recipes into chains: find a recipe file, parse it, compile its steps against the registry.

Compiling validates in layers after the schema (:class:`edgescale.config.Recipe`): each
step's op and config (the registry's config models), kinds and order (torch-stage steps
before ONNX-stage ones, ``export.onnx`` inserted at the move), then the recipe rules
(:mod:`edgescale.compress.rules`). This module imports every technique and the export
step, so the registry it compiles against is complete.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import edgescale.compress  # noqa: F401  (every compression technique registers its steps)
import edgescale.export.genai_builder  # noqa: F401  (registers export.genai: a torch→ONNX step, so nothing is inserted)
from edgescale.compress.registry import EXPORT_OP, Chain, Kind, Step, build_step, registry
from edgescale.compress.rules import check_chain
from edgescale.config import Recipe, builtin_dir, builtin_recipes
from edgescale.errors import UserError
from edgescale.export.steps import resolve_graph  # (and registers export.onnx)
from edgescale.profiles import find_device
from edgescale.yamlfile import parse, read_yaml


def compile_chain(recipe: Recipe, file: Path | str) -> Chain:
    """Validate a recipe's steps and kinds; insert ``export.onnx`` at the torch→ONNX move."""
    kind: Kind = "torch"
    out: list[Step] = []
    last_onnx: str | None = None
    for i, spec in enumerate(recipe.steps):
        step = build_step(spec.op, spec.params(), file, f"steps.{i}")
        sd = step.definition
        if sd.takes != kind:
            if kind == "torch" and sd.takes == "onnx":
                out.append(Step(EXPORT_OP, registry()[EXPORT_OP].config(), inserted=True))
                kind = "onnx"
                last_onnx = EXPORT_OP
            else:
                raise UserError(
                    f"{spec.op} is a torch-stage step but comes after the ONNX-stage step "
                    f"{last_onnx}; put torch-stage steps (prune.*, distill.*) before ONNX-stage ones",
                    file=file,
                    field=f"steps.{i}.op",
                )
        out.append(step)
        kind = sd.gives
        if kind == "onnx":
            last_onnx = spec.op
    if kind == "torch":
        out.append(Step(EXPORT_OP, registry()[EXPORT_OP].config(), inserted=True))
    ep = recipe.target.execution_provider if recipe.target is not None else None
    out = [replace(s, config=resolve_graph(s.config, ep)) if s.op == EXPORT_OP else s for s in out]
    if recipe.target.device is not None:  # `auto` settings resolve for its ISA: it must exist
        try:
            find_device(recipe.target.device)
        except UserError as e:
            raise UserError(e.detail, file=file, field="target.device") from None
    chain = Chain(recipe.name, tuple(out), str(file), recipe.description, recipe.target)

    check_chain(chain, file)
    return chain


def resolve_recipe_path(name: str, base: Path) -> Path | None:
    if name.endswith((".yaml", ".yml")):
        p = Path(name)
        return p if p.is_absolute() else base / p
    p = builtin_dir("recipes") / f"{name}.yaml"
    return p if p.exists() else None


def load_recipe(name: str, base: Path = Path("."), origin: tuple[Path, str] | None = None) -> Chain:
    """Load a recipe by built-in name or path (relative to ``base``) and compile its chain.

    ``origin`` names the file and field that referenced the recipe, for the error message.
    """
    path = resolve_recipe_path(name, base)
    if path is None:
        file, field = origin if origin else (None, None)
        raise UserError(
            f"unknown recipe {name!r}; allowed: {', '.join(builtin_recipes())} or a path to a .yaml file",
            file=file,
            field=field,
        )
    return load_recipe_file(path)


def load_recipe_file(path: Path) -> Chain:
    """Parse a recipe file and compile it into a :class:`edgescale.compress.registry.Chain`."""
    recipe = parse(Recipe, read_yaml(path), path)
    return compile_chain(recipe, path)
