"""Every YAML file the project ships validates with the same code `edgescale validate` runs."""

from pathlib import Path

import pytest

from edgescale.inputs import validate_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*REPO.glob("studies/*.yaml"), *REPO.glob("recipes/*.yaml"), *REPO.glob("devices/*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_yaml_validates(path):
    assert validate_file(path).partition(";")[0] in {"study", "recipe", "device"}


def test_something_is_shipped():
    assert len(SHIPPED) >= 6


# genai_*: onnxruntime-genai's builder takes Hugging Face checkpoints only; it runs on a tiny
# Llama in tests/export/test_genai_builder.py
RECIPES = sorted(p for p in REPO.glob("recipes/*.yaml") if not p.stem.startswith("genai_"))


@pytest.fixture(scope="module")
def tiny_exported(tiny_model, tmp_path_factory):
    """The tiny model through the default export step, once for the recipes that start with it."""
    from edgescale.compress.registry import EXPORT_OP, StepContext, registry

    sd = registry()[EXPORT_OP]
    ctx = StepContext(tmp_path_factory.mktemp("export"), log=lambda m: None)
    return sd.config(), sd.fn(tiny_model, sd.config(), ctx)


@pytest.mark.slow  # export + verification per recipe: 5-20 s each on 2 cores
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_runs_on_the_tiny_model(path, tiny_model, tiny_exported, corpus, tmp_path):
    """The whole chain (export inserted) runs; the artifact loads in onnxruntime and gives finite logits."""
    import numpy as np

    from edgescale.bench.ort_model import OrtCausalLM
    from edgescale.compress.recipe import load_recipe_file
    from edgescale.compress.registry import EXPORT_OP, StepContext

    artifact, kind = tiny_model, "torch"
    for i, step in enumerate(load_recipe_file(path).steps):
        if i == 0 and step.op == EXPORT_OP and step.config == tiny_exported[0]:
            artifact, kind = tiny_exported[1], "onnx"  # the same step on the same model: exported once
            continue
        work = tmp_path / str(i)
        work.mkdir()
        ctx = StepContext(work, log=lambda m: None, parent=tiny_model, parent_tokens=100_000, corpus=corpus)
        artifact, kind = step.definition.fn(artifact, step.config, ctx), step.definition.gives
    assert kind == "onnx" and artifact.suffix == ".onnx"
    lm = OrtCausalLM(artifact)
    logits = lm.logits(corpus["validation"].tokens[:32].astype(np.int64)[None])
    assert logits.shape == (1, 32, 256) and np.isfinite(logits).all()
