"""``export.genai``: a Hugging Face checkpoint through onnxruntime-genai's model builder.

The builder (``python -m onnxruntime_genai.models.builder``) writes fused CPU graphs:
``GroupQueryAttention`` (rotary embedding and KV-cache append inside one op),
``SkipSimplifiedLayerNormalization`` (residual add + RMSNorm), and for int4
``MatMulNBits`` weights. It needs transformers 5 and ``onnx_ir`` while optimum-onnx in
edgescale's environment pins transformers < 4.58, so it runs as a subprocess in an
environment of its own: ``python3 dev.py setup`` creates it in ``.venv/genai`` (found here
beside the running interpreter, ``sys.prefix/genai``), or ``EDGESCALE_GENAI_PYTHON`` names
any interpreter that imports ``onnxruntime_genai``.

The step saves the model (``save_pretrained``) into a temporary folder with a tokenizer,
runs the builder there, and keeps its graph. The builder reads the tokenizer only for
``genai_config.json``'s special tokens and the processing files it copies, never for the
graph, and edgescale scores the graph in the study's own tokenizer; the checkpoint a step
receives carries no tokenizer, so a stand-in with the model's vocabulary size is written.
The builder always writes external data (``model.onnx.data``); below
:data:`EMBED_BELOW` bytes the step folds it back into one ``model.onnx``, above it the
two files stay side by side. The KV head size, symbolic in the builder's graph, is
written into it so the file describes itself. The fp32 graph is then checked against
torch like ``export.onnx`` (logits within ``atol``, greedy tokens identical); the int4
graph's distance from torch is recorded, not enforced.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgescale.bench.ort_model import OrtCausalLM
from edgescale.compress.registry import StepConfig, StepContext, StepFacts, implement, register
from edgescale.errors import UserError
from edgescale.export.verify import verify_export
from edgescale.ortenv import child_env

OP = "export.genai"
PYTHON_ENV = "EDGESCALE_GENAI_PYTHON"
SETUP_COMMAND = "python3 dev.py setup"
EMBED_BELOW = 1_800_000_000  # bytes of graph + data kept in one file (protobuf's limit is 2 GiB)
_FUSED = frozenset(
    {
        "com.microsoft:GroupQueryAttention",
        "com.microsoft:SkipSimplifiedLayerNormalization",
        "SimplifiedLayerNormalization",
    }
)
_PROGRESS_EVERY_S = 5.0
# the builder's lines that start a slow phase (logged); "Reading layer i" is logged every few seconds
_PHASES = ("Reading embedding layer", "Reading final norm", "Saving ONNX model", "Saving GenAI config")


class GenaiExportConfig(StepConfig):
    precision: Literal["fp32", "int4"] = Field("fp32", description="weights: float32, or int4 MatMulNBits blocks")
    block_size: Literal[16, 32, 64, 128, 256] = Field(32, description="int4: input rows sharing one scale")
    accuracy_level: Literal[1, 2, 3, 4] = Field(
        4, description="int4: MatMulNBits compute type, 1 fp32, 2 fp16, 3 bf16, 4 int8 (MLAS's fast CPU path)"
    )
    atol: float = Field(1e-4, gt=0, description="fp32: max |logit difference| against torch, relative to max |logit|")
    verify_tokens: int = Field(32, ge=1, le=256, description="fp32: greedy tokens that must match torch")


def _writes(cfg: GenaiExportConfig) -> frozenset[str]:
    return _FUSED | ({"com.microsoft:MatMulNBits"} if cfg.precision == "int4" else frozenset())


def _weight_bytes(cfg: GenaiExportConfig) -> float | None:
    """int4: half a byte per weight plus a float32 scale per block (symmetric: no zero points)."""
    return 0.5 + 4 / cfg.block_size if cfg.precision == "int4" else None


# ---------------------------------------------------------------- the builder's environment


def genai_python() -> Path:
    """The interpreter that runs the builder: $EDGESCALE_GENAI_PYTHON, else the one
    ``python3 dev.py setup`` made beside this interpreter; a UserError naming that command."""
    named = os.environ.get(PYTHON_ENV)
    python = Path(named) if named else Path(sys.prefix) / "genai" / ("Scripts" if os.name == "nt" else "bin") / "python"
    if not python.exists():
        where = f"{PYTHON_ENV}={named}" if named else f"{python}"
        raise UserError(
            f"{OP} needs onnxruntime-genai's model builder in an environment of its own, and {where} does not "
            f"exist: run `{SETUP_COMMAND}` (it creates {Path(sys.prefix) / 'genai'}), or set {PYTHON_ENV} to an "
            "interpreter with onnxruntime-genai==0.18.0"
        )
    return python


def run_builder(
    src: Path, out: Path, cfg: GenaiExportConfig, log: Callable[[str], None] = print, python: Path | None = None
) -> Path:
    """Run the builder on the Hugging Face folder ``src`` (weights, config, tokenizer) into ``out``;
    returns ``out / "model.onnx"``. Its output is logged every few seconds; a failure is a
    UserError with its last lines."""
    python = python or genai_python()
    options = ["hf_token=false", "filename=model.onnx"]
    if cfg.precision == "int4":
        options += [f"block_size={cfg.block_size}", f"accuracy_level={cfg.accuracy_level}", "is_symmetric=true"]
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out)]
    cmd += ["-p", cfg.precision, "-e", "cpu", "-c", str(out / ".cache"), "--extra_options", *options]
    env = child_env({**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.pop("PYTHONPATH", None)  # edgescale's own packages must not shadow the builder's
    tail: collections.deque[str] = collections.deque(maxlen=12)
    t0 = last = time.perf_counter()
    # text mode reads tqdm's carriage-return updates as lines of their own
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            tail.append(line)
            phase = line.startswith(_PHASES)
            if phase or (line.startswith("Reading layer") and time.perf_counter() - last > _PROGRESS_EVERY_S):
                last = time.perf_counter()
                log(f"{OP} ({cfg.precision}): {time.perf_counter() - t0:.0f}s, {line[:120]}")
    graph = out / "model.onnx"
    if proc.returncode or not graph.exists():
        lines = "\n    ".join(tail)
        raise UserError(
            f"onnxruntime-genai's model builder failed (exit {proc.returncode}) on {src}; its last lines:\n    {lines}"
        )
    return graph


# ---------------------------------------------------------------- the builder's graph, finished


def finish_graph(graph: Path, embed_below: int = EMBED_BELOW) -> Path:
    """Write the KV head size into ``graph`` and fold its external data in when small enough."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    head = json.loads((graph.parent / "genai_config.json").read_text())["model"]["decoder"]["head_size"]
    for vi in [*model.graph.input, *model.graph.output]:
        if vi.name.startswith(("past_key_values.", "present.")):
            dim = vi.type.tensor_type.shape.dim[3]
            if not dim.HasField("dim_value"):
                dim.dim_value = int(head)  # replaces the symbolic kv_cache_dim (one field of a oneof)
    data = graph.with_name(graph.name + ".data")
    if data.exists() and graph.stat().st_size + data.stat().st_size < embed_below:
        onnx.load_external_data_for_model(model, str(graph.parent))
        for tensor in model.graph.initializer:
            tensor.data_location = onnx.TensorProto.DEFAULT
        onnx.save(model, str(graph))
        data.unlink()
    else:
        onnx.save(model, str(graph))  # external references kept: the data file stays beside the graph
    return graph


def write_standin_tokenizer(folder: Path, vocab_size: int, eos_token_id: int | None) -> None:
    """A word-level tokenizer with ``vocab_size`` ids, for a folder that has none (see the module doc)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<t{i}>": i for i in range(vocab_size)}
    eos = f"<t{eos_token_id if eos_token_id is not None and 0 <= eos_token_id < vocab_size else 0}>"
    tok = Tokenizer(models.WordLevel(vocab, unk_token=eos))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, unk_token=eos).save_pretrained(folder)


def has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def build_from_folder(src: Path, dest: Path, cfg: GenaiExportConfig, log: Callable[[str], None] = print) -> Path:
    """The builder on a Hugging Face folder with its tokenizer: ``dest/model.onnx`` (plus
    ``model.onnx.data`` above :data:`EMBED_BELOW`) and ``dest/genai_config.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".genai-") as tmp:
        graph = finish_graph(run_builder(src, Path(tmp) / "out", cfg, log))
        for f in graph.parent.iterdir():
            if f.name.startswith("model.onnx") or f.name == "genai_config.json":
                shutil.move(str(f), dest / f.name)
    return dest / "model.onnx"


# ---------------------------------------------------------------- the step


_FACTS = StepFacts(writes=_writes, weight_bytes=_weight_bytes)


@register(OP, GenaiExportConfig, takes="torch", gives="onnx", facts=_FACTS)
def export_genai(model, cfg: GenaiExportConfig, ctx: StepContext) -> Path:
    """Export with onnxruntime-genai's model builder (fused GQA graphs; Hugging Face models only)."""
    raise UserError(
        f"{OP} runs onnxruntime-genai's model builder on a Hugging Face checkpoint: use it with hf_model "
        "studies; edgescale's own models export with export.onnx",
        field="op",
    )


@implement(OP, backend="hf")
def export_genai_hf(model, cfg: GenaiExportConfig, ctx: StepContext) -> Path:
    """``export.genai`` for a transformers model (``HFCausalLM``): save, build, finish, check."""
    t0 = time.perf_counter()
    _check_head_size(model.hf.config)
    with tempfile.TemporaryDirectory(dir=ctx.work_dir, prefix=".hf-") as src:
        model.hf.save_pretrained(src)
        config = model.hf.config
        write_standin_tokenizer(Path(src), int(config.vocab_size), getattr(config, "eos_token_id", None))
        graph = build_from_folder(Path(src), ctx.work_dir, cfg, ctx.log)
    check = _check(model, graph, cfg, ctx.seed)
    ctx.metrics.update({**check, "exporter": "onnxruntime-genai model builder 0.18.0", "precision": cfg.precision})
    ctx.log(f"{OP} ({cfg.precision}) in {time.perf_counter() - t0:.0f}s: {_describe(check)}")
    return graph


def _check_head_size(config) -> None:
    """onnxruntime's CPU GroupQueryAttention kernel refuses a head size that is not a multiple of
    16 at run time ("head_size shall be a multiple of 16"): refused here, before the build."""
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head % 16:
        raise UserError(
            f"{OP}: the builder's GroupQueryAttention runs on onnxruntime's CPU provider only with a head size that "
            f"is a multiple of 16; this {config.model_type} has {head} ({config.hidden_size} / "
            f"{config.num_attention_heads} heads): use export.onnx (the fp32, int8_dynamic, int4_weight_only recipes)"
        )


def _check(model, graph: Path, cfg: GenaiExportConfig, seed: int) -> dict:
    """fp32: :func:`verify_export` (refuses a mismatch). int4: how far it is from torch, recorded."""
    if cfg.precision == "fp32":
        return verify_export(model, graph, atol=cfg.atol, gen_tokens=cfg.verify_tokens, seed=seed)
    import torch

    spec = model.spec
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, spec.vocab_size, (2, min(16, spec.block_size)), generator=gen)
    with torch.no_grad():
        ref = model.logits(ids).numpy()
    lm = OrtCausalLM(graph)
    prompt = ids[:1, : min(8, spec.block_size // 4)]
    n = min(cfg.verify_tokens, spec.block_size - prompt.shape[1])
    expected, produced = model.generate(prompt, n).tolist(), lm.generate(prompt.numpy(), n)
    same = next((i for i, (a, b) in enumerate(zip(produced, expected, strict=True)) if a != b), n)
    return {"max_abs_logit_diff": float(np.abs(lm.logits(ids.numpy()) - ref).max()), "greedy_tokens_identical": same}


def _describe(check: dict) -> str:
    return (
        f"max |Δlogit| vs torch {check['max_abs_logit_diff']:.2e}, "
        f"{check['greedy_tokens_identical']} greedy tokens identical to torch"
    )
