"""`edgescale recipes` lists every built-in recipe with its target, and with --ops every registered op."""

import json

from cli_runner import run_cli

from edgescale.compress.catalog import op_catalog, recipe_catalog, type_name
from edgescale.compress.registry import registry
from edgescale.config import builtin_recipes


def _cli(*args):
    return run_cli(*args)


def test_recipes_ops_json_names_every_op_and_field():
    r = _cli("recipes", "--ops", "--json")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert set(listing["ops"]) == set(registry())
    for op, d in listing["ops"].items():
        sd = registry()[op]
        assert (d["takes"], d["gives"]) == (sd.takes, sd.gives) and d["summary"]
        assert set(d["fields"]) == set(sd.config.model_fields)
        assert all(f["description"] and f["type"] for f in d["fields"].values()), op
    assert [r["name"] for r in listing["recipes"]] == builtin_recipes()
    for recipe in listing["recipes"]:
        assert recipe["target"]["runtime"] == "onnxruntime" and recipe["target"]["execution_provider"]
        assert recipe["chain"].split(" → ")[-1].split()[0] == recipe["steps"][-1]["op"]


def test_defaults_in_the_listing_are_the_configs_defaults():
    ops = op_catalog()
    assert ops["quantize.int8_static"]["fields"]["format"] == {
        "type": "Literal['qoperator', 'qdq']",
        "default": "qoperator",
        "description": registry()["quantize.int8_static"].config.model_fields["format"].description,
    }
    assert ops["quantize.int4_weight_only"]["fields"]["accuracy_level"]["default"] is None
    assert type_name(int) == "int" and type_name(list[str]) == "list[str]"


def test_recipes_table_lists_names_and_targets():
    r = _cli("recipes")
    assert r.returncode == 0, r.stderr
    for entry in recipe_catalog():
        assert entry["name"] in r.stdout
    assert "CPUExecutionProvider" in r.stdout
