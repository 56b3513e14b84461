"""Bring your own module: the encoder example adapted, masked, trained, exported and measured."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgescale.config import CustomModelConfig
from edgescale.errors import CausalityError, UserError
from edgescale.guard import check_causal_torch
from edgescale.models.custom import AdaptedLM, CustomSpec, resolve_factory
from edgescale.models.trust import CodeTrust

REPO = Path(__file__).resolve().parents[2]
TINY_KW = {"vocab_size": 1000, "d_model": 32, "nhead": 4, "dim_feedforward": 64, "num_layers": 2}


def _spec(**changes) -> CustomSpec:
    base = {
        "factory": "edgescale.examples.encoder:encoder_lm",
        "kwargs": TINY_KW,
        "input": "embeddings",
        "embed_dim": 32,
        "layout": "seq_first",
        "causal": "mask_arg",
        "vocab_size": 1000,
        "block_size": 32,
    }
    return CustomSpec(CustomModelConfig(**{**base, **changes}), 256, 32)


def test_adapted_encoder_is_causal_and_predicts_the_corpus_vocabulary():
    model = AdaptedLM(_spec()).eval()
    ids = torch.randint(0, 256, (2, 12))
    assert model.logits(ids).shape == (2, 12, 256)
    check_causal_torch(model, "adapted encoder")


def test_the_same_module_without_its_mask_is_refused():
    with pytest.raises(CausalityError, match="not causal"):
        check_causal_torch(AdaptedLM(_spec(causal="builtin")).eval(), "encoder without mask")


def test_adapter_errors_are_clear():
    with pytest.raises(UserError, match="not trusted: .* --trust-code no_such_pkg"):
        AdaptedLM(_spec(factory="no_such_pkg.mod:fn"))  # a spec (a checkpoint's, say) vetted by nobody
    with pytest.raises(UserError, match="cannot import"):
        resolve_factory("no_such_pkg.mod:fn", CodeTrust(modules=("no_such_pkg",)))
    with pytest.raises(UserError, match="has no callable"):
        AdaptedLM(_spec(factory="edgescale.examples.encoder:nothing"))
    with pytest.raises(UserError, match="predicts 100 ids but the corpus has 256"):
        AdaptedLM(_spec(vocab_size=100, kwargs={**TINY_KW, "vocab_size": 100}))
    with pytest.raises(UserError, match="no 'attn_mask' argument"):
        AdaptedLM(_spec(mask_kwarg="attn_mask"))
    with pytest.raises(ValueError, match="needs embed_dim"):
        CustomModelConfig(factory="a.b:c", vocab_size=256, input="embeddings")
    typo = {**TINY_KW, "num_layerz": TINY_KW["num_layers"]}  # the audit's misspelt argument (issue 17)
    del typo["num_layers"]
    with pytest.raises(UserError, match="model.kwargs: .*cannot take these arguments: .*num_layerz") as e:
        AdaptedLM(_spec(kwargs=typo))
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_custom_module_study_end_to_end(tmp_path):
    from edgescale.progress import Reporter
    from edgescale.run import run_study

    study = yaml.safe_load((REPO / "studies" / "custom_encoder.yaml").read_text())
    study["name"] = "custom_tiny"
    study["model"]["kwargs"] = TINY_KW
    study["model"]["embed_dim"] = 32
    study["model"]["block_size"] = 32
    study["training"] |= {"min_tokens": 8192, "max_tokens": 8192, "eval_every_tokens": 4096, "eval_tokens": 512}
    study["evaluation"] = {"context_length": 32, "stride": 32, "max_tokens": 1024, "batch_size": 8}
    study["measurement"] = {"prompt_len": 16, "decode_context": 32, "repeats": 3, "warmup": 1, "threads": 1}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = run_study(path, tmp_path / "run", Reporter(quiet=True))
    results = json.loads((out / "results.json").read_text())
    assert {v["variant_id"] for v in results["variants"]} == {"encoder6/fp32", "encoder6/int8_dynamic"}
    for v in results["variants"]:
        assert v["latency"]["host"]["decode"] == "full-recompute"
        assert v["cost"]["kv_bytes_per_token"] == 0 and v["loss"]["validation"]["bits_per_byte"] < 9
    assert results["sizes"][0]["model"] == "edgescale.examples.encoder:encoder_lm"


def test_a_custom_module_gets_only_the_steps_registered_for_it():
    """The pruning steps rebuild or mask a GPT's layers by name: the registry refuses them for an
    adapted module, before any work; recovery and the cache-less export serve it."""
    from edgescale.backends.custom import CustomBackend
    from edgescale.compress.recipe import compile_chain
    from edgescale.config import Recipe
    from edgescale.export.steps import export_nocache_step
    from edgescale.train.recover import recover

    backend = CustomBackend(None, None)  # resolving a step reads neither the study nor the corpus
    chain = compile_chain(Recipe(name="r", steps=[{"op": "distill.recover"}, {"op": "quantize.fp16"}]), "r.yaml")
    fns = [backend.implementation(s) for s in chain.steps]
    assert fns[0] is recover and fns[1] is export_nocache_step
    for op in ("prune.heads", "prune.ffn", "prune.layers", "prune.magnitude", "prune.nm"):
        [step, _] = compile_chain(Recipe(name="r", steps=[{"op": op}]), "r.yaml").steps
        with pytest.raises(UserError, match=rf"{op} is not available for your own modules \(only for edgescale's GPT"):
            backend.implementation(step)


def test_a_factory_module_beside_the_study_file_imports_without_pythonpath(tmp_path, monkeypatch):
    """Paths in a study are relative to the study file: so is its factory module, for that import only."""
    from edgescale.study_inputs import load_inputs

    monkeypatch.delenv("PYTHONPATH", raising=False)
    module = f"beside_{tmp_path.name.replace('-', '_')}"  # unique: sys.modules outlives the test
    (tmp_path / f"{module}.py").write_text(
        "from edgescale.examples.encoder import encoder_lm\n\ndef make(**kw):\n    return encoder_lm(**kw)\n"
    )
    study = yaml.safe_load((REPO / "studies" / "custom_encoder.yaml").read_text())
    study["model"] |= {"factory": f"{module}:make", "kwargs": TINY_KW, "embed_dim": 32, "block_size": 32}
    study["evaluation"] = {"context_length": 32, "stride": 32, "max_tokens": 1024, "batch_size": 8}
    study["measurement"] = {"prompt_len": 16, "decode_context": 32, "repeats": 3, "warmup": 1, "threads": 1}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    path_before = list(sys.path)
    try:
        with pytest.raises(UserError, match=f"cannot import '{module}'"):
            resolve_factory(f"{module}:make", CodeTrust(modules=(module,)))  # not on the import path by itself
        assert sys.path == path_before
        inputs = load_inputs(path)
        assert sys.path == path_before  # the folder was on the path for that import only
        [plan] = inputs.plans
        assert AdaptedLM(plan.cfg).inner.__class__.__name__ == "EncoderLM"  # rebuilt later without the folder
    finally:
        sys.modules.pop(module, None)
