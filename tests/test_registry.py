"""The one list of methods: it imports no torch, every entry resolves to its builder, and the config schema,
the workflow and every shipped config agree with it."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowloss.errors import LowlossError
from lowloss.methods.registry import FLOWS, METHODS, ROUTE_METHODS, WA_METHODS, get_method

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def test_the_method_table_imports_no_torch():
    code = "import sys, lowloss.methods.registry; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_names_a_builder_that_exists(name):
    method = METHODS[name]
    for reference in filter(None, (method.builder, method.matcher)):
        module, _, function = reference.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), reference
    assert ("matching" in method.accepts) == (method.matcher is not None)


def test_route_methods_are_the_layer_wise_ones():
    assert set(ROUTE_METHODS) == {name for name, m in METHODS.items() if m.builder.endswith("layerwise:build")}
    assert set(WA_METHODS) == {name for name in ROUTE_METHODS if name.endswith("+wa")}


def test_an_unknown_method_gets_the_closest_name():
    with pytest.raises(LowlossError, match="unknown method 'arc-wa' \\(did you mean `arc\\+wa`\\?\\)"):
        get_method("arc-wa")


def test_the_schema_lists_no_methods_of_its_own_and_the_connectors_of_the_table():
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    assert schema["$defs"]["methods"]["items"] == {"type": "string"}  # names are checked against METHODS
    connectors = schema["$defs"]["experiment"]["properties"]["connectors"]["properties"]
    assert set(connectors) == set(FLOWS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_names_methods_that_apply_to_its_architectures(path):
    config = yaml.safe_load(path.read_text())
    for name, experiment in config["experiments"].items():
        for method in experiment.get("methods") or config["methods"]:
            assert get_method(method).applies_to_architecture(experiment["arch"]), (path.name, name, method)


@pytest.mark.parametrize("name", ["ot", "linear+wa", "garipov-polychain-3", "realnvp-flow"])
def test_a_repair_variant_is_its_method_with_the_same_inputs_built_under_the_methods_name(name):
    base, variant = get_method(name), get_method(f"{name}+repair")
    assert variant.repair and not base.repair and variant.name == f"{name}+repair" and variant.base_name == name
    assert (variant.builder, variant.matcher, variant.inputs, variant.applies_to) == (
        base.builder,
        base.matcher,
        base.inputs,
        base.applies_to,
    )
    with pytest.raises(LowlossError, match=re.escape(f"unknown method '{name}+repair'")):
        get_method(f"{name}+repair+repair")
