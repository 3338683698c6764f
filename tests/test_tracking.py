"""MLflow tracking of a command: what one run holds, large files by reference, lineage, failures only warn."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lowloss.storage.weights import save_weights
from lowloss.tracking import lineage
from lowloss.tracking import outputs as tracked_outputs
from lowloss.tracking import runs as tracking
from lowloss.tracking import store as tracking_store
from tests.conftest import assert_one_line_error, run_cli

HISTORY = [
    {"epoch": 1, "lr": 0.01, "train_loss": 2.0, "train_acc": 0.5, "test_acc": 0.4},
    {"epoch": 2, "lr": 0.01, "train_loss": 1.0, "train_acc": 0.8, "test_acc": 0.7},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one costs seconds of schema migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(autouse=True)
def no_workflow(monkeypatch):
    """Runs here belong to no workflow invocation unless a test says so."""
    monkeypatch.delenv(lineage.ENV_PARENT_RUN, raising=False)
    monkeypatch.delenv(lineage.ENV_CONFIG_HASH, raising=False)


def namespace(store: str, out: Path, **extra) -> argparse.Namespace:
    """Parsed arguments of a `train`-like command logging to `store`."""
    values = dict(
        command="train",
        mlflow_experiment="unit",
        mlflow_uri=store,
        verbose=False,
        run=print,
        mlflow_tag=[("rule", "train"), ("experiment", "digits-x")],
        out=out,
        seed=3,
        dataset="digits",
        data_root="data",
        lr=0.01,
        epochs=2,
    )
    return argparse.Namespace(**{**values, **extra})


def client_run(store: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    return client, client.get_run(run_id)


def save_model(path: Path, value: float = 1.0) -> Path:
    save_weights(path, {"w": torch.full((2, 2), value)}, {"kind": "model", "history": HISTORY})
    return path


def test_a_command_is_one_run_with_tags_params_metrics_curves_and_files(store, tmp_path):
    weights = save_model(tmp_path / "seed3.safetensors")
    summary = {"out": str(weights), "arch": "onehidden", "seed": 3, "epochs": 2, "test_acc": 0.75, "ok": True}
    run_id = tracking.log_command(namespace(store, weights), summary, time.time())
    client, run = client_run(store, run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED" and run.info.run_name == "seed3 · train · digits-x"
    assert {k: tags[k] for k in ("command", "rule", "seed", "dataset", "arch")} == {
        "command": "train",
        "rule": "train",
        "seed": "3",
        "dataset": "digits",
        "arch": "onehidden",
    }
    # Constants are params: the RNG seed of the command, the model's seed, the epochs (once).
    assert (params["rng_seed"], params["seed"], params["epochs"], params["lr"]) == ("3", "3", "2", "0.01")
    assert "mlflow_tag" not in params and "summary.epochs" not in params
    # Accuracies in percent, as the report shows them; losses as they are.
    assert run.data.metrics["test_acc"] == 75.0 and not {"seed", "epochs", "ok"} & set(run.data.metrics)
    for key, values in (("history/train_loss", [2.0, 1.0]), ("history/test_acc", [40.0, 70.0])):
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == list(zip((1, 2), values))
    logged = {a.path for a in client.list_artifacts(run_id, "outputs")}
    assert logged == {"outputs/seed3.safetensors", "outputs/seed3.json"}
    assert tags[lineage.OUTPUT_TAG] == json.loads(weights.with_suffix(".json").read_text())["sha256"]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "digits" and "scikit-learn" in dataset.dataset.source
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"


def test_the_experiment_describes_itself_and_opens_on_its_runs_with_the_key_columns(store, tmp_path):
    tracking.log_command(namespace(store, tmp_path / "none"), {}, time.time())
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(store).get_experiment_by_name("unit")
    tags = experiment.tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "Accuracies and errors are percentages" in tags[tracking_store.NOTE_TAG]
    # Saved views, as the UI's Share button stores them: connect runs, the key metrics and tags first.
    for key, grouped in (("lowloss-methods", True), ("lowloss-paths", False)):
        envelope = json.loads(tags[f"mlflow.sharedViewState.{key}"])  # as the UI's Save view writes it
        assert envelope["name"].startswith("lowloss: ") and envelope["createdAt"] > 0
        view = json.loads(envelope["state"])
        assert view["searchFilter"] == "tags.command = 'connect'"
        assert view["selectedColumns"][:4] == [
            "tags.`experiment`",
            "tags.`method`",
            "tags.`pair`",
            "metrics.`worst_test_acc`",
        ]
        assert {"metrics.`barrier_test_acc`", "metrics.`seconds`"} <= set(view["selectedColumns"])
        assert view["orderByKey"] == "metrics.`worst_test_acc`" and view["orderByAsc"] is False
        assert ("groupBy" in view) == grouped
        (chart,) = [c for c in view["compareRunCharts"] if c["metricKey"] == "path/test_error"]
        assert chart["scaleType"] == "log" and chart["type"] == "LINE"
        link = f"#/experiments/{experiment.experiment_id}/runs?viewStateShareKey={key}&workflowType=machine_learning"
        assert f"]({link})" in tags[tracking_store.NOTE_TAG]


def test_the_ui_is_opened_on_each_experiments_view_of_its_methods(store, tmp_path):
    tracking.log_command(namespace(store, tmp_path / "none"), {}, time.time())
    from mlflow.tracking import MlflowClient

    unit = MlflowClient(store).get_experiment_by_name("unit").experiment_id
    view = "viewStateShareKey=lowloss-methods&workflowType=machine_learning"
    assert f"unit: http://ui/#/experiments/{unit}/runs?{view}" in tracking_store.ui_links(store, "http://ui")
    assert tracking_store.ui_links(f"sqlite:///{tmp_path}/none.db", "http://ui") == [
        "http://ui/#/experiments?workflowType=machine_learning"
    ]


def test_a_run_names_the_runs_that_made_its_inputs_and_its_parent(store, tmp_path, monkeypatch):
    a, b = save_model(tmp_path / "a.safetensors", 5.0), save_model(tmp_path / "b.safetensors", 6.0)
    makers = [
        tracking.log_command(namespace(store, path, mlflow_tag=[("rule", "train")]), {"seed": seed}, time.time())
        for seed, path in ((0, a), (1, b))
    ]
    monkeypatch.setenv(lineage.ENV_PARENT_RUN, "parent123")
    monkeypatch.setenv(lineage.ENV_CONFIG_HASH, "cafe")
    csv = tmp_path / "path.csv"
    pd.DataFrame(
        [
            dict(
                method="arc",
                arch="onehidden",
                leg=0,
                leg_name="arc",
                stage=0,
                t=0.0,
                position=0.0,
                split=split,
                loss=1.0,
                acc=0.5,
            )
            for split in ("train", "test")  # a path table holds every point on both splits
        ]
    ).to_csv(csv, index=False)
    args = namespace(
        store, csv, command="connect", endpoint_a=a, endpoint_b=b, connector=None, seed=0, mlflow_tag=[("pair", "0-1")]
    )
    run_id = tracking.log_command(args, {"method": "arc"}, time.time())
    client, run = client_run(store, run_id)
    tags = run.data.tags
    assert (tags["input.endpoint_a"], tags["input.endpoint_b"]) == tuple(makers)
    link = f"(#/experiments/{run.info.experiment_id}/runs/{makers[0]}?workflowType=machine_learning)"
    assert link in tags[tracking_store.NOTE_TAG]  # a link to the run, in the classic runs pages
    assert tags[lineage.PARENT_TAG] == "parent123" and tags["config_hash"] == "cafe"
    assert len(tags[lineage.GIT_COMMIT_TAG]) == 40  # the tests run from the project's git checkout
    assert "seed" not in tags and run.data.params["rng_seed"] == "0"  # connect's seed is no model's seed
    assert run.info.run_name == "arc 0-1 · connect"
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == {"figures/path.png"}
    assert {t.key: t.value for t in run.inputs.dataset_inputs[0].tags}["mlflow.data.context"] == "evaluation"


def test_path_curves_use_the_report_axis_so_methods_overlay(store, tmp_path):
    """A straight leg and a three-leg path share one x axis: step = 1000 × (leg + t) / legs."""
    rows = [
        dict(
            method="m",
            arch="onehidden",
            leg=leg,
            leg_name=f"leg{leg}",
            stage=0,
            t=t,
            position=leg + t,
            split=split,
            loss=t,
            acc=0.9 - 0.1 * t,
        )
        for split in ("train", "test")
        for leg in range(3)
        for t in (0.0, 0.5, 1.0)
    ]
    csv = tmp_path / "path.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    run_id = tracking.log_command(namespace(store, csv, command="connect"), {"method": "m"}, time.time())
    client, _ = client_run(store, run_id)
    along = client.get_metric_history(run_id, "path/test_acc")
    # Each leg's end and the next leg's start fall on one step; the lower accuracy is kept (in percent).
    assert [m.step for m in along] == [0, 167, 333, 500, 667, 833, 1000]
    assert [m.value for m in along] == pytest.approx([90, 85, 80, 85, 80, 85, 80])
    error = client.get_metric_history(run_id, "path/test_error")  # for the view's log axis
    assert [m.value for m in error] == pytest.approx([10, 15, 20, 15, 20, 15, 20])


def test_a_path_run_shows_its_barrier_in_percentage_points(store, tmp_path):
    summary = {
        "method": "m",
        "worst_test_acc": 0.9,
        "endpoint_test_acc": 0.97,
        "worst_train_acc": 0.95,
        "endpoint_train_acc": 0.99,
        "seconds": 1.5,
    }
    run_id = tracking.log_command(namespace(store, tmp_path / "none.csv", command="connect"), summary, time.time())
    metrics = client_run(store, run_id)[1].data.metrics
    assert metrics["barrier_test_acc"] == pytest.approx(7.0) and metrics["barrier_train_acc"] == pytest.approx(4.0)
    assert metrics["worst_test_acc"] == pytest.approx(90.0) and metrics["seconds"] == 1.5


def report_table(folder: Path) -> Path:
    """A Table 1 as `lowloss report` writes it (one row per method, experiment and split) and its Markdown."""
    folder.mkdir(exist_ok=True)
    rows = [
        ("ot+wa", "exp-a", "train", 97.5, 0.21, 2),
        ("ot+wa", "exp-a", "test", 95.4, None, 1),
        ("End Points", "exp-a", "train", 98.02, 0.04, 4),
    ]
    pd.DataFrame(rows, columns=["method", "experiment", "split", "mean", "std", "n"]).to_csv(
        folder / "table1.csv", index=False
    )
    (folder / "table1.md").write_text("| Methods | exp-a train |\n|:--|--:|\n| ot+wa | 97.50 ± 0.21 |\n")
    return folder


def test_the_report_run_carries_every_table_value_and_the_markdown(store, tmp_path):
    out = report_table(tmp_path / "report")
    (out / ".fig7.pdf.x1y2.tmp").write_text("another job's file, being written")  # the folder is shared
    args = namespace(store, None, command="report", out_dir=out, mlflow_tag=[("experiment", "exp-a")])
    run_id = tracking.log_command(args, {"files": [str(out / "table1.csv"), str(out / "table1.md")]}, time.time())
    client, run = client_run(store, run_id)
    assert run.info.status == "FINISHED"
    assert {Path(a.path).name for a in client.list_artifacts(run_id, "outputs")} == {"table1.csv", "table1.md"}
    table_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("table/")}
    assert table_metrics == pytest.approx(  # in percent, as in the table; a single pair has no std
        {
            "table/exp-a/ot_wa/train_mean": 97.5,
            "table/exp-a/ot_wa/train_std": 0.21,
            "table/exp-a/End Points/train_mean": 98.02,
            "table/exp-a/End Points/train_std": 0.04,
            "table/exp-a/ot_wa/test_mean": 95.4,
        }
    )
    assert "| ot+wa | 97.50 ± 0.21 |" in run.data.tags[tracking_store.NOTE_TAG]
    assert run.info.run_name == "report · exp-a"


def test_large_files_are_listed_by_uri_and_hash_not_copied(store, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENV_MAX_ARTIFACT_MB, "0")
    weights = save_model(tmp_path / "big.safetensors")
    run_id = tracking.log_command(namespace(store, weights), {}, time.time())
    client, _ = client_run(store, run_id)
    assert client.list_artifacts(run_id, "outputs") == []
    listed = json.loads(Path(client.download_artifacts(run_id, "outputs.json", str(tmp_path))).read_text())
    entry = next(f for f in listed["files"] if f["path"].endswith("big.safetensors"))
    assert entry["logged"] is False and entry["uri"] == weights.resolve().as_uri() and len(entry["sha256"]) == 64


def test_a_folder_argument_is_walked_when_the_summary_lists_no_files(tmp_path):
    """`connect --save-path` names a folder of its own breakpoints and lists none of them."""
    folder = tmp_path / "path"
    (folder / "sub").mkdir(parents=True)
    for name in ("path.json", "sub/breakpoint-0.safetensors"):
        (folder / name).write_text("{}")
    args = namespace("sqlite:///unused.db", None, command="connect", save_path=folder)
    assert tracked_outputs.output_files(args, {}) == [folder / "path.json", folder / "sub/breakpoint-0.safetensors"]


def test_a_failed_command_is_a_failed_run(store, tmp_path):
    run_id = tracking.log_command(namespace(store, tmp_path / "none.safetensors"), None, time.time(), error="bad input")
    _, run = client_run(store, run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "bad input"


def test_the_workflow_parent_run_holds_the_config_the_commit_and_links_to_the_report(store, tmp_path):
    config = {"name": "tiny", "methods": ["linear", "ot+wa"], "experiments": {"digits-x": {"train": {"epochs": 3}}}}
    run_id = lineage.start_workflow_run("unit", store, "tiny", {"config_hash": "abc"}, config)
    _, run = client_run(store, run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "workflow · tiny"
    assert run.data.tags["config_hash"] == "abc" and lineage.PARENT_TAG not in run.data.tags
    assert run.data.params == {"name": "tiny", "methods": "linear, ot+wa", "experiments.digits-x.train.epochs": "3"}
    assert len(run.data.tags[lineage.GIT_COMMIT_TAG]) == 40
    out = report_table(tmp_path / "report")
    args = namespace(store, None, command="report", out_dir=out, mlflow_tag=[("config_hash", "abc")])
    report_run = tracking.log_command(args, {"files": [str(out / "table1.csv"), str(out / "table1.md")]}, time.time())
    lineage.end_workflow_run(store, run_id, "FINISHED", out)
    client, run = client_run(store, run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["report_run.report"] == report_run
    link = f"(#/experiments/{run.info.experiment_id}/runs/{report_run}?workflowType=machine_learning)"
    assert (
        link in run.data.tags[tracking_store.NOTE_TAG]
        and "| ot+wa | 97.50 ± 0.21 |" in run.data.tags[tracking_store.NOTE_TAG]
    )
    assert {a.path for a in client.list_artifacts(run_id, "report")} == {"report/table1.csv", "report/table1.md"}


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


def test_a_run_that_could_not_be_logged_whole_is_failed_and_says_why(store, tmp_path, monkeypatch, caplog):
    def vanished(client, run_id, path):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(tracking, "_log_file", vanished)
    weights = save_model(tmp_path / "gone.safetensors")
    with caplog.at_level(logging.WARNING):
        assert tracking.log_command(namespace(store, weights, mlflow_experiment="vanish"), {}, time.time()) is None
    assert "MLflow tracking failed, results are unaffected (FileNotFoundError" in caplog.text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("vanish").experiment_id])
    assert run.info.status == "FAILED" and "gone.safetensors" in run.data.tags[tracking.TRACKING_ERROR_TAG]


def test_tags_are_key_value():
    assert tracking.tag("b=x=y") == ("b", "x=y")
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
        tracking.tag("novalue")


def test_a_table_value_that_is_missing_is_left_out(tmp_path):
    csv = tmp_path / "table2.csv"
    pd.DataFrame(
        {"method": ["a", "b"], "experiment": "e", "split": "test", "mean": [None, 90.0], "std": [None, 1.0], "n": 2}
    ).to_csv(csv, index=False)
    assert tracked_outputs.table_metrics(csv) == pytest.approx({"table/e/b/test_mean": 90.0, "table/e/b/test_std": 1.0})


def test_the_cli_logs_to_the_default_store_and_keeps_its_summary_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    out = tmp_path / "m.safetensors"
    result = run_cli(
        "--mlflow-experiment",
        "cli",
        "--mlflow-tag",
        "rule=train",
        "train",
        "--width",
        "8",
        "--epochs",
        "2",
        "--out",
        out,
        "--no-progress",
        check=True,
    )
    assert json.loads(result.stdout.splitlines()[-1])["epochs"] == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["rule"] == "train"
    for key in ("history/train_acc", "history/train_loss", "history/test_acc"):  # test accuracy per epoch too
        assert len(client.get_metric_history(runs[0].info.run_id, key)) == 2
    assert (tmp_path / "results" / "mlartifacts").is_dir()


def test_a_bad_tag_is_a_one_line_error(tmp_path):
    assert_one_line_error(
        run_cli("--mlflow-tag", "oops", "train", "--out", tmp_path / "x.safetensors"),
        "argument --mlflow-tag: expected KEY=VALUE, got 'oops'",
    )
