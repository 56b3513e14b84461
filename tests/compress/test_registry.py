"""Contract over the whole registry, and the chain rules of the recipe loader."""

from dataclasses import replace

import pytest
import torch
import yaml

from edgescale.compress.onnx_graph import op_counts
from edgescale.compress.recipe import compile_chain
from edgescale.compress.registry import Step, StepConfig, StepContext, StepFacts, register, registry
from edgescale.config import Recipe
from edgescale.errors import UserError
from edgescale.export.canonical import artifact_sha256


def test_registry_lists_the_builtin_steps():
    ops = registry()
    assert {"export.onnx", "quantize.int8_dynamic"} <= set(ops)
    for sd in ops.values():
        assert sd.takes in {"torch", "onnx"} and sd.gives in {"torch", "onnx"}
        assert sd.summary, f"{sd.op} needs a one-line docstring"
        for name, field in sd.config.model_fields.items():
            assert field.description, f"{sd.op}.{name} needs a description"


@pytest.mark.parametrize("op", sorted(registry()))
def test_default_config_round_trips_through_yaml(op):
    cfg = registry()[op].config()
    again = registry()[op].config.model_validate(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    assert again == cfg


def _input_for(kind, tiny_model, tiny_onnx):
    return tiny_model if kind == "torch" else tiny_onnx


# export.genai takes Hugging Face checkpoints only (onnxruntime-genai's builder): it runs on a
# tiny Llama in tests/export/test_genai_builder.py
@pytest.mark.parametrize("op", sorted(op for op in registry() if op != "export.genai"))
def test_every_step_runs_on_the_tiny_model_without_mutating_it(op, tiny_model, tiny_onnx, tmp_path, corpus):
    sd = registry()[op]
    before = artifact_sha256(tiny_onnx)
    weights = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    outs = []
    for i in range(2):
        work = tmp_path / str(i)
        work.mkdir()
        ctx = StepContext(work, log=lambda m: None, parent=tiny_model, parent_tokens=100_000, corpus=corpus)
        outs.append(sd.fn(_input_for(sd.takes, tiny_model, tiny_onnx), sd.config(), ctx))
    assert artifact_sha256(tiny_onnx) == before
    assert all((v == tiny_model.state_dict()[k]).all() for k, v in weights.items())
    if sd.gives == "onnx":
        assert outs[0].suffix == ".onnx"
        assert artifact_sha256(outs[0]) == artifact_sha256(outs[1]), "same input and seed must give the same hash"
    else:
        assert isinstance(outs[0], type(tiny_model)) and outs[0] is not tiny_model
        for a, b in zip(outs[0].state_dict().values(), outs[1].state_dict().values(), strict=True):
            assert torch.equal(a, b), "same input and seed must give the same weights"
    if sd.takes == "onnx":
        _assert_writes_what_it_declares(sd, tiny_onnx, outs[0])


def _assert_writes_what_it_declares(sd, before, after):
    """The ops a step added are its declared ``writes`` or default-domain ops; each declared op is really written.

    The device check looks up only the declared ops, so an undeclared contrib op would
    escape it; a declared op the step never writes would raise findings for nothing.
    """
    declared = sd.facts.of(sd.config()).writes
    added = set(op_counts(after)) - set(op_counts(before))
    undeclared = {op for op in added - declared if ":" in op}  # op_counts names non-default domains domain:Op
    assert not undeclared, f"{sd.op} writes {sorted(undeclared)} but does not declare them in its StepFacts"
    assert declared <= set(op_counts(after)), f"{sd.op} declares {sorted(declared - set(op_counts(after)))} unwritten"


def _chain(*ops):
    return compile_chain(Recipe(name="r", steps=[{"op": o} for o in ops]), "r.yaml")


def test_export_inserted_at_the_torch_to_onnx_move():
    assert [s.op for s in _chain().steps] == ["export.onnx"]
    chain = _chain("quantize.int8_dynamic")
    assert [s.op for s in chain.steps] == ["export.onnx", "quantize.int8_dynamic"]
    assert chain.steps[0].inserted and not chain.steps[1].inserted


def test_torch_step_after_onnx_step_is_rejected():
    @register("test.torch_identity", StepConfig, takes="torch", gives="torch", facts=StepFacts())
    def identity(model, cfg, ctx):
        """Identity (test only)."""
        return model

    try:
        assert [s.op for s in _chain("test.torch_identity").steps] == ["test.torch_identity", "export.onnx"]
        with pytest.raises(UserError, match="torch-stage step but comes after the ONNX-stage step") as e:
            _chain("quantize.int8_dynamic", "test.torch_identity")
        assert e.value.field == "steps.1.op"
    finally:
        registry().pop("test.torch_identity")


def test_step_key_depends_on_op_config_input_and_version():
    sd = registry()["quantize.int8_dynamic"]
    a = Step(sd.op, sd.config())
    assert a.key("in", "1") == Step(sd.op, sd.config()).key("in", "1")
    assert (
        len(
            {
                a.key("in", "1"),
                a.key("in2", "1"),
                a.key("in", "2"),
                Step(sd.op, sd.config(per_channel=True)).key("in", "1"),
            }
        )
        == 4
    )


def test_the_contract_catches_an_undeclared_op(tiny_onnx, tmp_path):
    sd = registry()["quantize.int4_weight_only"]
    out = sd.fn(tiny_onnx, sd.config(), StepContext(tmp_path, log=lambda m: None))
    _assert_writes_what_it_declares(sd, tiny_onnx, out)
    with pytest.raises(AssertionError, match=r"writes \['com.microsoft:MatMulNBits'\] but does not declare"):
        _assert_writes_what_it_declares(replace(sd, facts=StepFacts()), tiny_onnx, out)
