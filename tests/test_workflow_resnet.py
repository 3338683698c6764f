"""The workflow accepts a resnet20 experiment, `weight-matching`, `+repair` variants and the layer-wise route from
the method table (a dry run plans their jobs; a tiny one runs), passes BatchNorm recomputation on (to the route's
matching too), and refuses, before any job,
a method that does not apply to resnet20 or BatchNorm recomputation for a network without it."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.test_workflow import REPORT, snakemake, write_config

pytestmark = pytest.mark.slow
RESNET = "digits-resnet20-tiny"


def with_resnet(methods: list[str], norm: str = "layer", **connect):
    def change(config: dict) -> None:
        config["experiments"] = {
            RESNET: {
                "dataset": "digits",
                "arch": "resnet20",
                "arch_options": {"width_multiplier": 0.125, "norm": norm},
                "methods": methods,
                "train": {"epochs": 1},
                "pairs": [[0, 1]],
                "connect": {"points": 3, **connect},
            }
        }

    return change


def test_a_resnet_experiment_with_weight_matching_plans_its_matching_and_paths(tmp_path):
    config = write_config(tmp_path / "resnet.yaml", with_resnet(["linear", "ot", "weight-matching"]))
    output = snakemake(tmp_path, "--dry-run", "--printshellcmds", config=config).stdout
    matchings = set(re.findall(r"matchings/([\w+-]+)/0-1\.safetensors", output))
    assert matchings == {"ot", "weight-matching"}
    assert set(re.findall(r"paths/([\w+-]+)/0-1\.csv", output)) == {"linear", "ot", "weight-matching"}
    assert "--arch resnet20 --norm layer --width-multiplier 0.125" in output
    assert "--method weight-matching" in output and "--matching results/" in output


def test_repair_variants_read_their_methods_matchings_and_batchnorm_recomputation_is_passed_on(tmp_path):
    config = write_config(
        tmp_path / "repair.yaml",
        with_resnet(
            ["ot", "ot+repair", "weight-matching+repair", "ot+wa"], norm="batch", bn_batches=2, repair_batches=3
        ),
    )
    output = snakemake(tmp_path, "--dry-run", "--printshellcmds", config=config).stdout
    assert set(re.findall(r"matchings/([\w+-]+)/0-1\.safetensors", output)) == {"ot", "weight-matching", "ot+wa"}
    commands = [line for line in output.splitlines() if " connect " in line]
    assert len(commands) == 4 and all("--bn-batches 2" in line for line in commands)
    assert sum("--repair-batches 3" in line for line in commands) == 2
    route_match = [line for line in output.splitlines() if " match " in line and "--method ot+wa" in line]
    assert len(route_match) == 1 and "--bn-batches 2" in route_match[0]  # the route's fits see measured statistics
    assert "--method ot+repair" in output and "--matching results/digits-resnet20-tiny/matchings/ot/0-1" in output


def test_a_tiny_resnet_run_makes_its_repaired_path_and_table(tmp_path):
    config = write_config(tmp_path / "run.yaml", with_resnet(["linear", "linear+repair"]))
    snakemake(tmp_path, config=config)
    table = pd.read_csv(tmp_path / REPORT / "table2.csv")
    assert list(dict.fromkeys(table["method"])) == ["linear", "linear+repair", "End Points"]
    paths = {
        method: pd.read_csv(tmp_path / "results" / RESNET / "paths" / method / "0-1.csv")
        for method in ("linear", "linear+repair")
    }
    ends = [paths[m][paths[m]["t"].isin([0.0, 1.0])]["acc"].tolist() for m in paths]
    assert ends[0] == ends[1]


def test_batchnorm_recomputation_without_batchnorm_stops_the_run(tmp_path):
    config = write_config(tmp_path / "bad.yaml", with_resnet(["linear"], bn_batches=2))
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert f"config: experiments.{RESNET}.connect.bn_batches: resnet20" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_a_method_that_does_not_apply_to_resnet20_stops_the_run(tmp_path):
    config = write_config(tmp_path / "bad.yaml", with_resnet(["linear", "iaf-flow"]))
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert (
        f"config: experiments.{RESNET}: method 'iaf-flow' applies to networks with one hidden layer, "
        f"not to architecture 'resnet20'"
    ) in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
