"""MLflow tracking of a command: what one run holds, large files by reference, failures only warn."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lowloss import tracking
from lowloss.artifacts import save_weights
from tests.conftest import assert_one_line_error, run_cli

HISTORY = [{"epoch": 1, "lr": 0.01, "train_loss": 2.0, "train_acc": 0.5},
           {"epoch": 2, "lr": 0.01, "train_loss": 1.0, "train_acc": 0.8}]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one costs seconds of schema migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def namespace(store: str, out: Path, **extra) -> argparse.Namespace:
    """Parsed arguments of a `train`-like command logging to `store`."""
    values = dict(command="train", mlflow_experiment="unit", mlflow_uri=store, verbose=False, run=print,
                  mlflow_tag=[("rule", "train"), ("pair", "0-1")], out=out, seed=3, dataset="digits", lr=0.01)
    return argparse.Namespace(**{**values, **extra})


def client_run(store: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    return client, client.get_run(run_id)


def test_a_command_is_one_run_with_tags_params_metrics_curves_and_files(store, tmp_path):
    weights = tmp_path / "seed3.safetensors"
    save_weights(weights, {"w": torch.ones(2, 2)}, {"kind": "model", "history": HISTORY})
    summary = {"out": str(weights), "arch": "onehidden", "test_acc": 0.75, "epochs": 2, "ok": True}
    run_id = tracking.log_command(namespace(store, weights), summary, time.time())
    client, run = client_run(store, run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "train 0-1 3"
    assert {k: tags[k] for k in ("command", "rule", "pair", "seed", "dataset", "arch")} == {
        "command": "train", "rule": "train", "pair": "0-1", "seed": "3", "dataset": "digits", "arch": "onehidden"}
    assert run.data.params["lr"] == "0.01" and "mlflow_tag" not in run.data.params
    assert run.data.metrics["test_acc"] == 0.75 and "ok" not in run.data.metrics
    curve = client.get_metric_history(run_id, "history/train_loss")
    assert [(m.step, m.value) for m in curve] == [(1, 2.0), (2, 1.0)]
    logged = {a.path for a in client.list_artifacts(run_id, "outputs")}
    assert logged == {"outputs/seed3.safetensors", "outputs/seed3.json"}


def test_a_connector_curve_per_step_is_a_series(store, tmp_path):
    connector = tmp_path / "nu.safetensors"
    curve = [{"step": step, "loss": 1 / step} for step in (1, 2, 3)]
    save_weights(connector, {"w": torch.ones(1)}, {"kind": "connector", "curve": curve})
    run_id = tracking.log_command(namespace(store, connector, command="fit-connector"), {}, time.time())
    client, _ = client_run(store, run_id)
    assert [m.step for m in client.get_metric_history(run_id, "history/loss")] == [1, 2, 3]


def test_path_tables_become_metrics_along_the_path(store, tmp_path):
    csv = tmp_path / "path.csv"
    rows = [dict(split=split, position=p, acc=0.9 - 0.1 * p, loss=p, leg=0, t=p) for split in ("train", "test")
            for p in (0.0, 0.5, 1.0)]
    pd.DataFrame(rows).to_csv(csv, index=False)
    run_id = tracking.log_command(namespace(store, csv, method="arc"), {"method": "arc"}, time.time())
    client, run = client_run(store, run_id)
    along = client.get_metric_history(run_id, "path/test_acc")
    assert [m.step for m in along] == [0, 1, 2]
    assert [m.value for m in along] == pytest.approx([0.9, 0.85, 0.8])
    assert [m.value for m in client.get_metric_history(run_id, "path/position")] == [0.0, 0.5, 1.0]
    assert run.data.tags["method"] == "arc"


def test_large_files_are_listed_by_uri_and_hash_not_copied(store, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENV_MAX_ARTIFACT_MB, "0")
    weights = tmp_path / "big.safetensors"
    save_weights(weights, {"w": torch.ones(4)}, {"kind": "model"})
    run_id = tracking.log_command(namespace(store, weights), {}, time.time())
    client, _ = client_run(store, run_id)
    assert client.list_artifacts(run_id, "outputs") == []
    listed = json.loads(Path(client.download_artifacts(run_id, "outputs.json", str(tmp_path))).read_text())
    entry = next(f for f in listed["files"] if f["path"].endswith("big.safetensors"))
    assert entry["logged"] is False and entry["uri"] == weights.resolve().as_uri() and len(entry["sha256"]) == 64


def test_a_failed_command_is_a_failed_run(store, tmp_path):
    run_id = tracking.log_command(namespace(store, tmp_path / "none.safetensors"), None, time.time(),
                                  error="bad input")
    _, run = client_run(store, run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "bad input"


def test_without_an_experiment_nothing_is_tracked(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.ENV_EXPERIMENT, raising=False)
    args = namespace(f"sqlite:///{tmp_path}/never.db", tmp_path / "x", mlflow_experiment=None)
    assert tracking.log_command(args, {}, time.time()) is None
    assert not (tmp_path / "never.db").exists()


def test_a_tracking_failure_only_warns(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    args = namespace(f"sqlite:///{blocked}/mlflow.db", blocked)
    with caplog.at_level(logging.WARNING):
        assert tracking.log_command(args, {"x": 1}, time.time()) is None
    assert "MLflow tracking failed, results are unaffected" in caplog.text


def test_tags_are_key_value():
    assert tracking.tag("b=x=y") == ("b", "x=y")
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
        tracking.tag("novalue")


def test_the_cli_logs_to_the_default_store_and_keeps_its_summary_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    out = tmp_path / "m.safetensors"
    result = run_cli("--mlflow-experiment", "cli", "--mlflow-tag", "rule=train", "train", "--width", "8",
                     "--epochs", "2", "--out", out, "--no-progress", check=True)
    assert json.loads(result.stdout.splitlines()[-1])["epochs"] == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["rule"] == "train"
    assert len(client.get_metric_history(runs[0].info.run_id, "history/train_acc")) == 2
    assert (tmp_path / "results" / "mlartifacts").is_dir()


def test_a_bad_tag_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_cli("--mlflow-tag", "oops", "train", "--out", tmp_path / "x.safetensors"),
                          "argument --mlflow-tag: expected KEY=VALUE, got 'oops'")
