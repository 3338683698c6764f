"""The workflow accepts a resnet20 experiment and `weight-matching` from the method table (a dry run plans
their jobs) and refuses, before any job, a method that does not apply to resnet20."""

from __future__ import annotations

import re

import pytest

from tests.test_workflow import snakemake, write_config

pytestmark = pytest.mark.slow
RESNET = "digits-resnet20-tiny"


def with_resnet(methods: list[str]):
    def change(config: dict) -> None:
        config["experiments"] = {RESNET: {"dataset": "digits", "arch": "resnet20",
                                          "arch_options": {"width_multiplier": 0.125, "norm": "layer"},
                                          "methods": methods, "train": {"epochs": 1}, "pairs": [[0, 1]],
                                          "connect": {"points": 3}}}
    return change


def test_a_resnet_experiment_with_weight_matching_plans_its_matching_and_paths(tmp_path):
    config = write_config(tmp_path / "resnet.yaml", with_resnet(["linear", "ot", "weight-matching"]))
    output = snakemake(tmp_path, "--dry-run", "--printshellcmds", config=config).stdout
    matchings = set(re.findall(r"matchings/([\w+-]+)/0-1\.safetensors", output))
    assert matchings == {"ot", "weight-matching"}
    assert set(re.findall(r"paths/([\w+-]+)/0-1\.csv", output)) == {"linear", "ot", "weight-matching"}
    assert "--arch resnet20 --norm layer --width-multiplier 0.125" in output
    assert "--method weight-matching" in output and "--matching results/" in output


def test_a_method_that_does_not_apply_to_resnet20_stops_the_run(tmp_path):
    config = write_config(tmp_path / "bad.yaml", with_resnet(["linear", "ot+wa"]))
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert (f"config: experiments.{RESNET}: method 'ot+wa' applies to chains of dense and conv layers, "
            f"not to architecture 'resnet20'") in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
