"""The workflow on the user's checkpoints: an experiment names a model and its checkpoints instead of training
seeds; each checkpoint is imported once and every method × pair runs on it as on trained models, with MLflow
lineage down to the checkpoints' digests; what cannot apply is refused at the config check, naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lowloss.storage.weights import file_sha256, read_meta
from tests.conftest import USER_MODEL
from tests.test_workflow import ROOT, job_environment, snakemake_command

pytestmark = pytest.mark.slow
EXPERIMENT = "user-cnn"


def checkpoint_config(files: tuple[Path, Path], **changes) -> dict:
    """A config of one checkpoint experiment on `files`, with `changes` to its keys (None drops a key)."""
    experiment = {
        "dataset": "digits",
        "model": USER_MODEL,
        "model_args": {"channels": [4, 8]},
        "checkpoints": {0: str(files[0]), 1: str(files[1])},
        "pairs": [[0, 1]],
        "connect": {"points": 3},
        **changes,
    }
    return {
        "name": "checkpoints",
        "methods": ["linear", "weight-matching"],
        "device": "cpu",
        "experiments": {EXPERIMENT: {key: value for key, value in experiment.items() if value is not None}},
    }


def run_snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on `config` in `workdir`; jobs import the user's module from the project's root, as a user's
    jobs would from their own folder."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**job_environment(), "PYTHONPATH": str(ROOT)}
    command = snakemake_command("--configfile", "config.yaml", "--profile", ROOT / "profiles" / "local", *args)
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def test_checkpoints_are_imported_once_and_every_method_runs_on_every_pair(user_checkpoints, tmp_path):
    a, b, _ = user_checkpoints
    result = run_snakemake(tmp_path, checkpoint_config((a, b)), "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = tmp_path / "results" / EXPERIMENT
    meta = read_meta(results / "models" / "checkpoint0.safetensors")
    assert (meta["arch"], meta["checkpoint_sha256"], meta["checkpoint"]) == (USER_MODEL, file_sha256(a), str(a))
    for method in ("linear", "weight-matching"):
        table = pd.read_csv(results / "paths" / method / "0-1.csv")
        assert (table["arch"] == USER_MODEL).all()
        assert table.query("split == 'test'")["acc"].iloc[0] == meta["test_acc"]  # Θ^A is the imported checkpoint
    report = pd.read_csv(tmp_path / "results" / "report" / "checkpoints" / "table2.csv", header=[0, 1], index_col=0)
    assert {"linear", "weight-matching", "End Points"} <= set(report.index)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    experiment = client.get_experiment_by_name("lowloss-checkpoints")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    imports = {run.data.tags["seed"]: run for run in runs if run.data.tags["rule"] == "import"}
    for seed, checkpoint in (("0", a), ("1", b)):
        assert imports[seed].data.tags["input_sha256.checkpoint"] == file_sha256(checkpoint)
        assert imports[seed].data.tags["arch"] == USER_MODEL
    connect = next(run for run in runs if run.data.tags["rule"] == "connect")
    assert connect.data.tags["input.endpoint_a"] == imports["0"].info.run_id  # the path leads back to the file
    assert connect.data.tags["input_sha256.endpoint_a"] == meta["sha256"]


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"arch": "onehidden"}, f"config: experiments.{EXPERIMENT}.arch: 'onehidden' should not be valid under {{}}"),
        ({"model": None}, f"config: experiments.{EXPERIMENT}: 'model' is a required property"),
        ({"model": "resnet18"}, f"config: experiments.{EXPERIMENT}.model: 'resnet18' does not match"),
        ({"pairs": [[0, 2]]}, f"config: experiments.{EXPERIMENT}.pairs: 2 is not a key of checkpoints (0, 1)"),
        ({"checkpoints": {0: "a.pt", 1: "gone.pt"}}, f"config: experiments.{EXPERIMENT}.checkpoints.0: a.pt: file not"),
        ({"normalize": [0.5, 0.2, 0.1]}, f"config: experiments.{EXPERIMENT}.normalize: [0.5, 0.2, 0.1]: expected MEAN"),
        ({"input_size": [3, 32]}, f"config: experiments.{EXPERIMENT}.input_size: [3, 32] is too short"),
        (
            {"model": "torchvision:resnet18", "methods": ["realnvp-flow"]},
            f"config: experiments.{EXPERIMENT}: method 'realnvp-flow' applies to networks with one hidden layer, and "
            f"model 'torchvision:resnet18' is never one",
        ),
    ],
)
def test_a_bad_checkpoint_experiment_stops_before_any_job_naming_the_key(user_checkpoints, tmp_path, changes, fragment):
    config = checkpoint_config(user_checkpoints[:2], **changes)
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0 and fragment in result.stdout + result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_a_trained_experiment_refuses_checkpoint_keys(tmp_path):
    config = {
        "experiments": {
            "x": {"dataset": "digits", "arch": "onehidden", "pairs": [[0, 1]], "model_args": {"num_classes": 10}}
        }
    }
    result = run_snakemake(tmp_path, config, "--dry-run")
    message = "config: experiments.x.model_args: {'num_classes': 10} should not be valid under {}"
    assert result.returncode != 0 and message in result.stdout + result.stderr
