"""Read a YAML file through a pydantic model, with errors that name the file, the field
and what is allowed (every user-facing YAML file: studies, recipes, device profiles,
calibrations)."""

from __future__ import annotations

import os
import stat
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
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Bounds on every user-facing YAML file, checked before anything is built from it: a study, recipe,
# profile or calibration is a few KB, so these leave orders of magnitude of room. libyaml's composer
# recurses in C (30,000 nested levels end in a segfault, not an error), so depth is counted on the
# parser's event stream, which is iterative; so is the size the document has once its aliases are
# followed (a 700-byte "billion laughs" file loads as shared references, then expands to 10^9 nodes
# in anything that walks it, e.g. validation of model.kwargs), in nodes and in bytes of scalar text.
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 1_000_000
# The same for bytes: 20,000 aliases of one 900 KB string are 40 nodes' worth of events but 18 GB of text
# to anything that copies or hashes the values (16 MiB: 16x the largest file itself).
MAX_EXPANDED_BYTES = 16 << 20


class _SafeLoader(_BaseLoader):
    """The safe loader, refusing a mapping that repeats a key (YAML says keys are unique; PyYAML keeps
    the last silently, so a study could say two things and mean one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:  # the mapping's own keys; keys merged in by "<<" may be overridden
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def check_bounds(text: str, path: Path | str) -> None:
    """Refuse a YAML text that is too large, nested too deep, or that expands (aliases followed) to
    more than :data:`MAX_NODES` nodes or :data:`MAX_EXPANDED_BYTES` bytes of scalars, before anything
    is built from it."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise UserError(f"file is larger than {MAX_BYTES:,} bytes; a config file is a few KB", file=path)
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, scalar bytes) it stands for, expanded
    stack: list[list] = [[None, 0, 0]]  # per open collection: [its anchor, nodes inside so far, bytes so far]
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 0, 0])
            if len(stack) - 1 > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise UserError(f"nested deeper than {MAX_DEPTH} levels (line {line})", file=path)
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, inside, nbytes = stack.pop()
            count = inside + 1
        elif isinstance(event, yaml.ScalarEvent):
            anchor, count, nbytes = event.anchor, 1, len(event.value.encode("utf-8", "surrogatepass"))
        elif isinstance(event, yaml.AliasEvent):
            anchor, (count, nbytes) = None, sizes.get(event.anchor, (1, 0))
        else:
            continue
        if anchor is not None:
            sizes[anchor] = (count, nbytes)
        stack[-1][1] += count
        stack[-1][2] += nbytes
        _check_expanded(stack[-1][1], stack[-1][2], path)


def _check_expanded(nodes: int, nbytes: int, path: Path | str) -> None:
    if nodes > MAX_NODES:
        raise UserError(
            f"expands to more than {MAX_NODES:,} values once its aliases (*name) are followed: refused "
            "(an alias bomb, or far more than any config needs)",
            file=path,
        )
    if nbytes > MAX_EXPANDED_BYTES:
        raise UserError(
            f"expands to more than {MAX_EXPANDED_BYTES:,} bytes of text once its aliases (*name) are followed: "
            "refused (an alias bomb, or far more than any config needs)",
            file=path,
        )


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _raise_validation(err: ValidationError, file: Path | str, model: type[BaseModel]) -> None:
    e = err.errors()[0]
    loc = _format_loc(tuple(p for p in e["loc"] if not str(p).startswith("function-")))
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        allowed = _allowed_fields(model, e["loc"][:-1])
        msg = f"unknown field; allowed: {', '.join(allowed)}" if allowed else "unknown field"
    elif e["type"] in NUMBER_ERRORS:
        msg += _number_hint(model, e)
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    raise UserError(msg + more, file=file, field=loc) from None


# Errors of a number out of range or of the wrong kind: the message adds the value given and the
# field's description, which says the bound's reason (e.g. what memory a larger batch would take).
NUMBER_ERRORS = frozenset(
    {"less_than", "less_than_equal", "greater_than", "greater_than_equal", "finite_number", "int_type"}
    | {"int_parsing", "int_from_float", "bool_type", "bool_parsing", "float_parsing", "float_type"}
)


def _number_hint(model: type[BaseModel], e: dict) -> str:
    value = e.get("input")
    got = f", got {value!r}"[:60] if isinstance(value, int | float | str) else ""
    current: type[BaseModel] | None = model
    field = None
    for part in (p for p in e["loc"] if isinstance(p, str)):
        field = current.model_fields.get(part) if current else None
        if field is None:
            break
        current = _model_in(field.annotation)
    return got + (f"; {field.description}" if field is not None and field.description else "")


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


def _read_text(path: Path) -> str:
    """The file's text, at most :data:`MAX_BYTES` of it: only a regular file is opened (a FIFO blocks in
    open(), /dev/zero never ends), and the read stops one byte past the cap, so a file that grows after
    the check cannot pass it."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # before open(): opening a FIFO with no writer hangs
            raise UserError("not a regular file (a device, pipe or folder); give a config file on disk", file=path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # swapped for a FIFO since: no hang
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UserError("not a regular file (a device, pipe or folder); give a config file on disk", file=path)
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:  # before reading a 54 MB list into memory
            raise UserError(f"file is larger than {MAX_BYTES:,} bytes; a config file is a few KB", file=path)
        return data.decode("utf-8")
    except FileNotFoundError:
        raise UserError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", file=path) from None


def _yaml_error(e: yaml.YAMLError, text: str) -> str:
    """The parser's error as one line with its line and column (a reader error, e.g. a NUL byte, gives a
    character position and a second 'in "<unicode string>"' line)."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}: "
        what = getattr(e, "problem", None) or str(e)
    elif isinstance(e, yaml.reader.ReaderError):
        pos = min(max(e.position, 0), len(text))
        line, column = text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = e.character if isinstance(e.character, int) else ord(e.character or "?")
        where, what = f"line {line}, column {column}: ", f"unacceptable character #x{char:04x}: {e.reason}"
    else:
        where, what = "", str(e)
    return "invalid YAML: " + where + " ".join(str(what).split())


def read_yaml(path: Path) -> dict:
    path = Path(path)
    text = _read_text(path)
    try:
        check_bounds(text, path)
        data = yaml.load(text, Loader=_SafeLoader)  # safe: _SafeLoader
    except yaml.YAMLError as e:
        raise UserError(_yaml_error(e, text), file=path) from None
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. the date 2001-02-30; nesting too deep
        raise UserError(" ".join(f"invalid YAML: {type(e).__name__}: {e}".split()), file=path) from None
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", file=path)
    return data


def parse(model: type[BaseModel], data: dict, file: Path | str) -> Any:
    data = _rename_deprecated(model, data, file)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        _raise_validation(err, file, model)
