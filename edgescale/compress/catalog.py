"""What ``edgescale recipes`` lists: the built-in recipes and every registered op with its fields.

Both come from the same objects the loader uses (compiled chains, the registry's config
models), so the listing cannot drift from what ``edgescale validate`` accepts.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from edgescale.compress.recipe import load_recipe  # imports every technique: the registry is complete
from edgescale.compress.registry import registry
from edgescale.config import builtin_recipes


def recipe_catalog() -> list[dict[str, Any]]:
    """Every built-in recipe: name, target, the compiled chain and its description."""
    out = []
    for name in builtin_recipes():
        chain = load_recipe(name)
        target = chain.target.model_dump() if chain.target is not None else None
        steps = [{"op": s.op, "inserted": s.inserted, "config": s.config.model_dump(mode="json")} for s in chain.steps]
        out.append(
            {
                "name": name,
                "target": target,
                "chain": chain.describe(),
                "steps": steps,
                "description": chain.description,
            }
        )
    return out


def op_catalog() -> dict[str, dict[str, Any]]:
    """Every registered op: kinds taken and given, summary, its facts at the default config (those that differ
    from a step that changes nothing), and each field's type, default and description."""
    out = {}
    for op, sd in sorted(registry().items()):
        out[op] = {
            "takes": sd.takes,
            "gives": sd.gives,
            "summary": sd.summary,
            "facts": sd.facts.describe(sd.config()),
            "fields": _fields(sd.config),
        }
    return out


def _fields(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    defaults = model().model_dump(mode="json")
    return {
        name: {"type": type_name(f.annotation), "default": defaults.get(name), "description": f.description or ""}
        for name, f in model.model_fields.items()
    }


def type_name(annotation: Any) -> str:
    """A readable type: ``Literal['a', 'b']``, ``list[str]``, ``int | None``."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(typing|typing_extensions)\.", "", text)
