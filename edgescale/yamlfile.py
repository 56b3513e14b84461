"""Read a YAML file through a pydantic model, with errors that name the file, the field
and what is allowed (every user-facing YAML file: studies, recipes, device profiles,
calibrations)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edgescale.errors import UserError

# A model lists its renamed keys here, old -> new, e.g. ``renamed_keys: ClassVar[dict[str, str]] =
# {"prompt_tokens": "prompt_len"}``. The old key keeps working for one release: parse() renames it and
# warns with the file and the field path. (Done on the data, not in a model validator, because only
# the walk from the top knows where in the file a nested key sits.)
RENAMED_KEYS = "renamed_keys"

# libyaml's safe loader when PyYAML was built with it (about 10x faster), else the Python one
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _raise_validation(err: ValidationError, file: Path | str, model: type[BaseModel]) -> None:
    e = err.errors()[0]
    loc = _format_loc(tuple(p for p in e["loc"] if not str(p).startswith("function-")))
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        allowed = _allowed_fields(model, e["loc"][:-1])
        msg = f"unknown field; allowed: {', '.join(allowed)}" if allowed else "unknown field"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    raise UserError(msg + more, file=file, field=loc) from None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[X] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'unknown field' messages."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_in(field.annotation) if field else None
        if current is None:
            return []
    return sorted(current.model_fields)


def _field_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The model nested under ``key`` (a field name or its alias), if any."""
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return _model_in(field.annotation)
    return None


def _renames_below(model: type[BaseModel], seen: frozenset = frozenset()) -> bool:
    """Whether ``model`` or a model nested in it declares renamed keys."""
    if getattr(model, RENAMED_KEYS, None):
        return True
    nested = (_model_in(f.annotation) for f in model.model_fields.values())
    return any(m is not None and m not in seen and _renames_below(m, seen | {model}) for m in nested)


def _rename_deprecated(model: type[BaseModel], data: Any, file: Path | str, loc: tuple = (), memo=None) -> Any:
    """``data`` with the deprecated keys of ``model`` (and the models nested in it) renamed, one warning each.

    Only subtrees whose model declares a rename are walked, and each YAML node once (``memo``,
    by identity): an alias bomb (one node referenced 9^9 times) stays as cheap as its text."""
    if not _renames_below(model):
        return data
    memo = {} if memo is None else memo
    if id(data) in memo:
        return memo[id(data)]
    if isinstance(data, list):
        out_list = memo[id(data)] = []
        out_list.extend(_rename_deprecated(model, item, file, (*loc, i), memo) for i, item in enumerate(data))
        return out_list
    if not isinstance(data, dict):
        return data
    renamed: dict[str, str] = getattr(model, RENAMED_KEYS, {})
    out = memo[id(data)] = {}
    for key, value in data.items():
        new = renamed.get(key)
        if new is not None:
            where = _format_loc((*loc, key))
            if new in data:
                raise UserError(f"give {new} only ({key} is its deprecated spelling)", file=file, field=where)
            print(f"warning: {file}: {where} is deprecated; use {new}", file=sys.stderr)
            key = new
        sub = _field_model(model, key)
        out[key] = _rename_deprecated(sub, value, file, (*loc, key), memo) if sub is not None else value
    return out


def read_yaml(path: Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", file=path) from None
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # safe: _SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"invalid YAML: {where}{getattr(e, 'problem', None) or e}", file=path) from None
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. the date 2001-02-30; nesting too deep
        raise UserError(f"invalid YAML: {type(e).__name__}: {e}", file=path) from None
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", file=path)
    return data


def parse(model: type[BaseModel], data: dict, file: Path | str) -> Any:
    data = _rename_deprecated(model, data, file)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        _raise_validation(err, file, model)
