"""Study and recipe validation: one message naming the file, the field and what is allowed."""

from pathlib import Path

import pytest
import yaml

from edgescale.compress.recipe import load_recipe
from edgescale.config import Study, builtin_dir
from edgescale.errors import UserError
from edgescale.inputs import load_study, validate_file
from edgescale.models.shape import ladder_sizes

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "studies" / "default.yaml").read_text())


def _write(tmp_path, data, name="study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


EXPLICIT = [
    {"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32},
    {"name": "b", "n_layer": 2, "n_head": 2, "n_embd": 64},
]


def _mutated(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(DEFAULT))
    if any(k.startswith("ladder__sizes") for k in changes):
        data["ladder"] = {"block_size": 128, "sizes": [dict(s) for s in EXPLICIT]}
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
    return data


def test_default_study_is_valid():
    study, path = load_study()
    assert path.resolve() == (REPO / "studies" / "default.yaml").resolve()
    assert study.name == "default"
    sizes = ladder_sizes(study.ladder)
    assert len(sizes) >= 4 and len(study.recipes) >= 2
    from edgescale.models.shape import GPTConfig, accounting

    n = [accounting(GPTConfig(s.n_layer, s.n_head, s.n_embd), 128).params_non_embedding for s in sizes]
    assert n == sorted(n) and n[-1] / n[0] >= 30  # the ladder spans at least 30x in N


@pytest.mark.parametrize("kind", ["studies", "recipes", "devices"])
def test_shipped_files_are_read_from_the_top_level_folder(kind):
    """One copy of each shipped file: in a checkout the loaders read the repository's own folder
    (packaging installs it as edgescale/<kind>; tests/test_packaging.py checks the wheel)."""
    assert builtin_dir(kind).resolve() == (REPO / kind).resolve()
    assert not (REPO / "edgescale" / kind).exists()


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"colour": "red"}, "colour", "unknown field; allowed: corpus, devices"),
        ({"ladder__sizes__0__n_heads": 2}, "ladder.sizes.0.n_heads", "allowed: n_embd, n_head, n_layer, name"),
        ({"ladder__sizes__0__n_embd": 25}, "ladder.sizes.0", "divisible by n_head"),
        ({"training__learning_rate": -1}, "training.learning_rate", "greater than 0"),
        ({"corpus__tokenizer": "bpe"}, "corpus.tokenizer", "'bytes'"),
        ({"measurement__decode_context": 4096}, "(top level)", "exceeds the block size (128)"),
        (
            {"recipes": ["fp32", "int3_magic"]},
            "recipes.1",
            "unknown recipe 'int3_magic'; allowed: fp16, fp32, genai_fp32, genai_int4, heads_ffn50_recover",
        ),
        ({"devices": ["pixel99"]}, "devices.0", "unknown device 'pixel99'; allowed: a55-phone, desktop-x86"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"ladder__sizes": None}, "ladder", "exactly one of sizes or params_non_embedding"),
        ({"training__cooled_fractions": [0.5]}, "training", "end at 1.0"),
        ({"distillation": {"teacher": "s9", "students": ["s0"]}}, "(top level)", "unknown size 's9'; allowed: s0"),
        ({"model": {"factory": "x.y:z", "vocab_size": 256}}, "(top level)", "exactly one of ladder"),
        ({"model": None, "ladder": None}, "(top level)", "exactly one of ladder"),
    ],
)
def test_bad_study_names_file_field_and_allowed(tmp_path, changes, field, fragment):
    path = _write(tmp_path, _mutated(**changes))
    with pytest.raises(UserError) as e:
        load_study(path)
    assert e.value.file == str(path)
    assert e.value.field == field
    assert fragment in str(e.value)


def test_invalid_yaml_reports_line(tmp_path):
    path = _write(tmp_path, "name: x\nladder: [\n")
    with pytest.raises(UserError, match=r"invalid YAML: line 3"):
        load_study(path)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="expected a mapping"):
        load_study(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(UserError, match="file not found"):
        load_study(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("steps", "field", "fragment"),
    [
        (
            [{"op": "quantize.int9"}],
            "steps.0.op",
            "unknown op 'quantize.int9'; allowed: distill.recover, export.genai, export.onnx, optimize.graph",
        ),
        ([{"op": "quantize.int8_dynamic", "bits": 4}], "steps.0.bits", "allowed: op_types, per_channel"),
        ([{"op": "quantize.int8_dynamic", "weight_type": "int4"}], "steps.0.weight_type", "'quint8' or 'auto'"),
    ],
)
def test_bad_recipe_names_file_field_and_allowed(tmp_path, steps, field, fragment):
    path = _write(tmp_path, {"name": "r", "steps": steps}, "recipe.yaml")
    with pytest.raises(UserError) as e:
        validate_file(path)
    assert (e.value.file, e.value.field) == (str(path), field)
    assert fragment in str(e.value)


def test_recipe_path_relative_to_study(tmp_path):
    _write(tmp_path, {"name": "mine", "steps": [{"op": "quantize.int8_dynamic", "per_channel": True}]}, "mine.yaml")
    study = _write(tmp_path, _mutated(recipes=["fp32", "mine.yaml"]))
    s, _ = load_study(study)
    chain = load_recipe("mine.yaml", tmp_path)
    assert s.recipes == ["fp32", "mine.yaml"]
    assert chain.steps[1].config.per_channel is True


def test_study_defaults_round_trip():
    s = Study.model_validate(
        {"name": "x", "ladder": {"sizes": [{"name": "a", "n_layer": 1, "n_head": 1, "n_embd": 8}]}}
    )
    assert Study.model_validate(yaml.safe_load(yaml.safe_dump(s.model_dump(mode="json")))) == s


def test_the_evaluation_cap_is_in_bytes_and_takes_its_old_name():
    from edgescale.config import EvaluationConfig

    assert EvaluationConfig(max_tokens=4096).max_bytes == 4096 == EvaluationConfig(max_bytes=4096).max_bytes
    assert "max_tokens" not in EvaluationConfig().model_dump()  # written (and keyed) by its new name


@pytest.mark.parametrize("processes", [None, 2])
def test_measurement_processes_reach_the_measure_spec(monkeypatch, tmp_path, processes):
    """``measurement.processes`` (default 3, as MeasureSpec's) is what the timing worker is asked for."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from tiny_study import TINY

    from edgescale import pipeline

    m = {**TINY["measurement"], **({"processes": processes} if processes else {})}
    study = Study.model_validate({**TINY, "measurement": m})
    seen = []

    def fake_measure(paths, spec):
        seen.append(spec)
        return SimpleNamespace(to_dict=dict)

    monkeypatch.setattr(pipeline, "measure_variants", fake_measure)
    rd = SimpleNamespace(cached=lambda key: None, root=tmp_path, inside=tmp_path.joinpath, record=lambda key, rec: rec)
    fake = SimpleNamespace(study=study, rd=rd, rep=SimpleNamespace(status=lambda text: nullcontext()))
    pipeline.Pipeline.measure(fake, {"a/fp32": {"sha256": "0" * 64, "artifact": "a.onnx"}})
    assert seen[0].processes == (processes or 3) == study.measurement.processes
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "measurement": {**TINY["measurement"], "processes": 0}}))
    with pytest.raises(UserError, match="processes"):
        load_study(bad)
