"""Checks of a Hugging Face folder that run before any weight is loaded.

Each one reads only small files (``config.json``, the safetensors index and headers, the
tokenizer's vocabulary), so a folder that cannot work stops with one message before the
seconds-to-minutes of loading, exporting or scoring a large checkpoint:

- **which files hold the weights**, as transformers decides (``model.safetensors``, else the
  shards named by ``model.safetensors.index.json``): every shard the index names is present
  and every tensor it places in a shard is in that shard's header. A ``*.safetensors`` file
  the index does not name (left over from an earlier sharding, say) is ignored, as
  transformers ignores it: it is neither opened nor part of the weights' hash. A folder with
  both ``model.safetensors`` and an index is refused, since transformers would silently load
  the single file and skip the shards.
- **RAM**: the float32 bytes of the weights, summed from the headers' dtypes and shapes,
  times a per-stage factor (:data:`RAM_FACTOR_BY_STAGE`), against ``MemAvailable``.
- **tokenizer against vocabulary**: the tokenizer's largest id must be a row of the model's
  embedding. A ``vocab_size`` padded above the tokenizer (Qwen2.5: 151,936 rows for 151,665
  ids) is fine.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from edgescale.errors import UserError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"

# Peak resident memory of a stage as a multiple of the checkpoint's float32 weight bytes
# (edgescale loads every checkpoint as float32, whatever the files' dtype). Measured in
# issue 15 on a TinyLlama-1.1B-shaped Llama (4.40 GB of float32 weights), each stage in its
# own process, 2-core Xeon, by benchmarks/large_export.py: source copy 4.81 GB (1.09x),
# export 9.56 GB (2.17x: the model plus torch's exporter's copy of the weights inside
# optimum), quantize.int8_dynamic 6.77 GB (1.54x), quantize.int4_weight_only 5.78 GB
# (1.31x), scoring 4.69 GB (1.07x). Rounded up by about 10% for what a run also holds.
RAM_FACTOR_BY_STAGE: dict[str, float] = {
    "load": 1.2,
    "export": 2.4,
    "quantize": 1.7,
    "score": 1.2,
}

_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header


def checkpoint_files(path: Path, field: str = "hf_model.path") -> list[Path]:
    """The safetensors files transformers would load from ``path``, each checked to exist."""
    single, index = path / SAFE_WEIGHTS, path / SAFE_INDEX
    if index.is_file():
        if single.is_file():
            raise UserError(
                f"both {SAFE_WEIGHTS} and {SAFE_INDEX}: transformers would load {SAFE_WEIGHTS} alone and "
                "ignore the shards; keep one of them",
                file=path,
                field=field,
            )
        return _indexed_shards(index, field)
    if single.is_file():
        return [single]
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if found:
        raise UserError(
            f"found {', '.join(found[:3])} but neither {SAFE_WEIGHTS} nor {SAFE_INDEX} naming the shards",
            file=path,
            field=field,
        )
    pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
    extra = f" ({', '.join(pickles)} are pickles, which edgescale never opens)" if pickles else ""
    raise UserError(f"no *.safetensors weights{extra}", file=path, field=field)


def _indexed_shards(index: Path, field: str) -> list[Path]:
    """The shards ``index`` names; one message for the first one missing or lacking its tensors."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map:
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError("not a safetensors index (a JSON object with a non-empty weight_map)", file=index) from None
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise UserError(f"weight_map places {tensor!r} in {shard!r}, not a file of this folder", file=index)
        by_shard.setdefault(shard, []).append(tensor)
    files = []
    for shard, tensors in sorted(by_shard.items()):
        f = index.parent / shard
        if not f.is_file():
            raise UserError(
                f"shard {shard} is missing: {SAFE_INDEX} places {len(tensors)} tensors in it", file=f, field=field
            )
        absent = sorted(set(tensors) - set(read_header(f, field)))
        if absent:
            raise UserError(
                f"{SAFE_INDEX} places {len(absent)} tensors in {shard} that it does not hold, such as {absent[0]!r}",
                file=f,
                field=field,
            )
        files.append(f)
    return files


def read_header(path: Path, field: str = "hf_model.path") -> dict[str, tuple[str, tuple[int, ...]]]:
    """A safetensors file's tensors as {name: (dtype, shape)}, read from its JSON header alone."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > _MAX_HEADER_BYTES:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(fh.read(n))
        return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise UserError(
            f"not a readable safetensors file (truncated or corrupt): {e}", file=path, field=field
        ) from None


def weight_bytes_fp32(files: list[Path]) -> int:
    """Bytes of the checkpoint's floating-point tensors once loaded as float32 (integer buffers as stored)."""
    total = 0
    for f in files:
        for dtype, shape in read_header(f).values():
            size = 4 if dtype.startswith(("F", "BF")) else _DTYPE_BYTES.get(dtype, 1)
            total += size * math.prod(shape)
    return total


def mem_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` (the kernel's estimate of memory a new process can take without swapping), or
    None where the file does not exist (not Linux): then the RAM check is skipped."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:
        return None
    return None


def check_fits_in_ram(weight_bytes: int, available_bytes: int, stages=tuple(RAM_FACTOR_BY_STAGE), where=None) -> None:
    """Refuse, naming both numbers, a checkpoint whose largest stage would not fit in ``available_bytes``."""
    stage = max(stages, key=RAM_FACTOR_BY_STAGE.__getitem__)
    factor = RAM_FACTOR_BY_STAGE[stage]
    need = int(weight_bytes * factor)
    if need > available_bytes:
        raise UserError(
            f"the weights need about {_gb(need)} of RAM to {stage} ({factor}x their {_gb(weight_bytes)} in float32, "
            f"from the safetensors headers) but {_gb(available_bytes)} is available (MemAvailable); "
            "use a smaller checkpoint or a machine with more memory",
            file=where,
            field="hf_model.path",
        )


def check_tokenizer_vocab(tokenizer, vocab_size: int, where=None) -> None:
    """Refuse a tokenizer that can produce an id the model has no embedding row (and logit) for."""
    ids = tokenizer.get_vocab().values()
    top = max(ids) if ids else -1
    if top >= vocab_size:
        raise UserError(
            f"the tokenizer has ids up to {top} ({len(tokenizer)} tokens) but the model's vocab_size is "
            f"{vocab_size}: ids >= {vocab_size} have no embedding; this tokenizer does not belong to this model",
            file=where,
            field="hf_model.tokenizer",
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB ({n:,} bytes)"
