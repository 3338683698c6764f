"""The workflow on configs/test-tiny.yaml: every output, the table, the HTML report, one MLflow run per job
nested under the invocation's run with its lineage (in the store and through a real `mlflow server`),
incremental re-runs, a run killed with SIGKILL, lint, presets that replace config.yaml, and config
validation. The tiny workflow runs once per module; later tests only dry-run or redo a few jobs."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "test-tiny.yaml"
EXPERIMENT, DEEP = "digits-tiny", "digits-fc3-tiny"
FITS = yaml.safe_load(TINY.read_text())["experiments"][EXPERIMENT]["connector_fits"]
BUDGET = yaml.safe_load(TINY.read_text())["experiments"][EXPERIMENT]["curves"]["budget"]
REPORT = Path("results/report/test-tiny")
MLFLOW_EXPERIMENT = "lowloss-test-tiny"
FIGURES = [
    f"paths-{EXPERIMENT}",
    f"paths-{DEEP}",
    f"route-{DEEP}",
    f"cost-{EXPERIMENT}",
    f"cost-{DEEP}",
    "fig7",
    "ensembles_cost",
    "budget",
]
REPORT_FILES = [
    *(f"{table}.{suffix}" for table in ("table1", "table2") for suffix in ("csv", "md", "html", "tex")),
    "worst_points.csv",
    "worst_points.html",
    "cost.csv",
    "ensembles.csv",
    "ensembles.md",
    "ensembles.html",
    "budget.csv",
    "budget.md",
    "budget.html",
    *(f"{figure}.{suffix}" for figure in FIGURES for suffix in ("png", "svg", "pdf")),
]
ENSEMBLES = ["ind", "wa1", "wa2"]  # the deep experiment's ensembles of its two endpoints

pytestmark = pytest.mark.slow


def snakemake_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *map(str, args)]


def job_environment() -> dict[str, str]:
    """PATH with this interpreter first (rules run `python -m lowloss`); the default MLflow store."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("LOWLOSS_MLFLOW_EXPERIMENT", None)
    return env


def snakemake(
    workdir: Path, *args: str | Path, config: Path | None = TINY, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Snakemake with the local profile in `workdir`, on `config` (None: the workdir's config.yaml)."""
    configfile = [] if config is None else ["--configfile", config]
    result = subprocess.run(
        snakemake_command(*configfile, "--profile", ROOT / "profiles" / "local", "--cores", "2", *args),
        cwd=workdir,
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(workdir: Path, config: Path = TINY) -> Counter:
    """Jobs per rule that a run would execute now (from a dry run's job stats); empty when up to date."""
    result = snakemake(workdir, "--dry-run", config=config)
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return Counter()
    stats = output[output.index("Job stats:") :]
    return Counter({rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if rule != "total"})


def write_config(path: Path, change) -> Path:
    """A copy of the tiny config with `change(config)` applied."""
    config = yaml.safe_load(TINY.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """The tiny workflow, run once: (workdir, jobs per rule it ran)."""
    workdir = tmp_path_factory.mktemp("workflow")
    plan = planned_jobs(workdir)
    snakemake(workdir)
    return workdir, plan


def report_table(workdir: Path, name: str = "table1") -> pd.DataFrame:
    """A table of the report: one row per method, experiment and split (mean, std, n)."""
    return pd.read_csv(workdir / REPORT / f"{name}.csv")


def test_every_stage_runs_and_every_output_exists(workflow):
    workdir, plan = workflow
    config = yaml.safe_load(TINY.read_text())
    pairs = ["0-1", "2-3"]
    deep = config["experiments"][DEEP]["methods"]
    assert plan == Counter(
        train=6 + 2,
        model_set=1,
        fit_connector=FITS,
        match=2 + 1,
        fit_curve=2,
        fit_curve_budget=2 * len(BUDGET),
        connect_budget=2 * len(BUDGET),
        connect=2 * (len(config["methods"]) - 1) + len(deep),
        connect_fit=2 * FITS,  # realnvp-flow, once per connector fit
        report=1,
        ensemble=len(ENSEMBLES),
        ensemble_report=1,
        all=1,
    )
    results = workdir / "results" / EXPERIMENT
    for seed in (0, 1, 2, 3, 10, 11):
        assert (results / "models" / f"seed{seed}.safetensors").is_file()
        assert not (results / "models" / f"seed{seed}.ckpt.safetensors").exists()
    assert (results / "V.json").is_file()
    for fit in range(FITS):
        assert (results / "connectors" / "realnvp-flow" / f"fit{fit}.safetensors").is_file()
    for pair in pairs:  # fitted files live in folders named after the method that reads them
        assert (results / "matchings" / "ot" / f"{pair}.safetensors").is_file()
        assert (results / "curves" / "garipov-polychain-3" / f"{pair}.safetensors").is_file()
        for method in config["methods"]:
            names = [f"{pair}.fit{fit}" for fit in range(FITS)] if method == "realnvp-flow" else [pair]
            for name in names:
                assert (results / "paths" / method / f"{name}.csv").is_file()
                assert (workdir / "logs" / EXPERIMENT / "paths" / method / f"{name}.log").is_file()
        for epochs in BUDGET:  # the curve once more per fitting budget
            assert (results / "curves" / "garipov-polychain-3" / f"{pair}.epochs{epochs}.safetensors").is_file()
            assert (results / "paths" / "garipov-polychain-3" / f"{pair}.epochs{epochs}.csv").is_file()
    assert (workdir / "results" / DEEP / "matchings" / "ot+wa" / "0-1.safetensors").is_file()
    for method in deep:
        assert (workdir / "results" / DEEP / "paths" / method / "0-1.csv").is_file()
    for method in ENSEMBLES:
        assert (workdir / "results" / DEEP / "ensembles" / method / "size2.safetensors").is_file()
    for name in REPORT_FILES:
        assert (workdir / REPORT / name).stat().st_size > 0


def test_tables_have_every_method_and_end_points_in_percent(workflow):
    workdir, _ = workflow
    config = yaml.safe_load(TINY.read_text())
    methods = config["methods"]
    table = report_table(workdir)
    assert list(dict.fromkeys(table["method"])) == [*methods, "End Points"]
    assert set(zip(table["experiment"], table["split"])) == {(EXPERIMENT, "train"), (EXPERIMENT, "test")}
    assert table["mean"].between(0, 100).all() and table["std"].between(0, 100).all()
    assert all(math.isfinite(value) for value in table[["mean", "std"]].to_numpy().ravel())
    assert set(table["n"]) == {2, 4}  # two pairs; four endpoints
    worst = pd.read_csv(workdir / REPORT / "worst_points.csv")
    assert worst["worst_acc"].between(0, 100).all()
    ours = worst[worst["experiment"] == EXPERIMENT]
    assert len(ours) == ((len(methods) - 1 + FITS) * 2 + 4) * 2  # (paths × pairs + the 4 endpoints) × splits
    assert "| End Points" in (workdir / REPORT / "table1.md").read_text()
    deep = report_table(workdir, "table2")
    assert list(dict.fromkeys(deep["method"])) == [*config["experiments"][DEEP]["methods"], "End Points"]  # paper's
    assert set(deep["experiment"]) == {DEEP}


def test_the_budget_table_has_a_fit_of_its_own_per_budget_and_stays_out_of_table_1(workflow):
    workdir, _ = workflow
    curves = workdir / "results" / EXPERIMENT / "curves" / "garipov-polychain-3"
    for epochs in BUDGET:
        assert json.loads((curves / f"0-1.epochs{epochs}.json").read_text())["epochs"] == epochs
    rows = pd.read_csv(workdir / REPORT / "budget.csv")
    assert sorted(zip(rows["pair"], rows["epochs"])) == sorted((p, e) for p in ("0-1", "2-3") for e in BUDGET)
    assert set(rows["network"]) == {EXPERIMENT} and set(rows["method"]) == {"garipov-polychain-3"}
    # 0 epochs leave the bend at the straight segment's midpoint: the curve's grid holds linear's points
    worst = pd.read_csv(workdir / REPORT / "worst_points.csv").query("method == 'linear'")
    unfitted = rows[rows["epochs"] == 0].set_index("pair")
    for row in worst.itertuples():
        assert 100 * unfitted.loc[row.pair, row.split] <= row.worst_acc + 1e-9
    table = (workdir / REPORT / "budget.md").read_text().splitlines()
    assert table[0] == "| network, curve | " + " | ".join(map(str, BUDGET)) + " epochs |"
    assert table[2].startswith(f"| {EXPERIMENT} (2 pairs), garipov-polychain-3 | ") and len(table) == 3
    assert set(report_table(workdir).query("method == 'garipov-polychain-3'")["n"]) == {2}  # its own fit alone


def test_the_ensembles_table_has_every_method_by_number_of_models(workflow):
    workdir, _ = workflow
    table = pd.read_csv(workdir / REPORT / "ensembles.csv")
    assert list(dict.fromkeys(table["label"])) == ["Ind", "WA(2)", "WA(1)", "best single model"]
    assert sorted(table.loc[table["method"] == "ind", "models"]) == [1, 2]
    model1 = table[table["models"] == 1].drop_duplicates("method").set_index("method")["test_acc"]
    assert model1["ind"] == model1["wa1"] == model1["wa2"] <= model1["best"]  # every line starts at model 1
    pair = table[table["models"] == 2].set_index("method")
    assert pair.loc["ind", "flops_ratio"] == 2 and pair.loc["wa1", "flops_ratio"] == 1
    assert 1 < pair.loc["wa2", "flops_ratio"] < 2
    assert table["test_acc"].between(0, 100).all()


def mlflow_runs(workdir: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/results/mlflow.db")
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_every_job_logged_one_mlflow_run_with_tags_metrics_and_files(workflow):
    """Runs only after the first invocation: later tests re-run jobs under parent runs of their own."""
    workdir, plan = workflow
    client, runs = mlflow_runs(workdir)
    (parent,) = [run for run in runs if run.data.tags["rule"] == "workflow"]
    jobs = [run for run in runs if run is not parent]
    assert Counter(run.data.tags["rule"] for run in jobs) == plan - Counter(all=1)
    assert {run.data.tags.get("mlflow.parentRunId") for run in jobs} == {parent.info.run_id}
    failed = [run.data.tags for run in runs if run.info.status != "FINISHED"]
    assert not failed, failed  # their `error` or `tracking_error` tag says why
    assert len({run.data.tags["config_hash"] for run in runs}) == 1
    for run in jobs:
        tags = run.data.tags
        assert tags["dataset"] == "digits"
        if tags["rule"] == "report":  # the report covers both experiments
            assert tags["experiment"] == f"{EXPERIMENT},{DEEP}"
        elif tags["rule"] == "ensemble_report":  # only the deep experiment has ensembles
            assert tags["experiment"] == DEEP
        else:
            assert (tags["experiment"], tags["arch"]) in {(EXPERIMENT, "onehidden"), (DEEP, "fc3")}
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"summary.json", "outputs.json", "outputs"} <= artifacts
    train = next(
        r
        for r in runs
        if r.data.tags["rule"] == "train" and r.data.tags["seed"] == "0" and r.data.tags["experiment"] == EXPERIMENT
    )
    history = client.get_metric_history(train.info.run_id, "history/train_loss")
    assert [m.step for m in history] == [1, 2, 3]  # one point per epoch
    assert 1 < train.data.metrics["test_acc"] <= 100  # in percent, as in the report
    connect = next(r for r in runs if r.data.tags["rule"] == "connect" and r.data.tags.get("method") == "ot")
    assert connect.data.tags["pair"] in {"0-1", "2-3"}
    along = client.get_metric_history(connect.info.run_id, "path/test_acc")
    table = pd.read_csv(workdir / "results" / EXPERIMENT / "paths" / "ot" / f"{connect.data.tags['pair']}.csv")
    assert 0 < len(along) <= (table["split"] == "test").sum()  # steps on the report's x axis
    assert min(m.step for m in along) == 0 and max(m.step for m in along) <= 1000  # Θ^A at 0, Θ^B at 1000
    assert min(m.value for m in along) == pytest.approx(connect.data.metrics["worst_test_acc"])
    # Lineage: the connect run names the runs that trained its endpoints and matched them.
    a, b = connect.data.tags["pair"].split("-")
    made = {
        (
            run.data.tags.get("experiment"),
            run.data.tags["rule"],
            run.data.tags.get("method"),
            run.data.tags.get("seed", run.data.tags.get("pair")),
        ): run.info.run_id
        for run in jobs
    }
    assert connect.data.tags["input.endpoint_a"] == made[EXPERIMENT, "train", None, a]
    assert connect.data.tags["input.endpoint_b"] == made[EXPERIMENT, "train", None, b]
    assert connect.data.tags["input.matching"] == made[EXPERIMENT, "match", "ot", connect.data.tags["pair"]]
    assert [d.dataset.name for d in connect.inputs.dataset_inputs] == ["digits"]
    # The report run carries every value of Table 1, in percent as in the table.
    (report,) = [run for run in jobs if run.data.tags["rule"] == "report"]
    for row in report_table(workdir).itertuples():
        key = f"table/{row.experiment}/{row.method}/{row.split}"
        assert report.data.metrics[f"{key}_mean"] == pytest.approx(row.mean)
        assert report.data.metrics[f"{key}_std"] == pytest.approx(row.std)
    assert "| End Points" in report.data.tags["mlflow.note.content"]
    logged = {Path(a.path).name for a in client.list_artifacts(report.info.run_id, "outputs")}
    assert {f"cost-{EXPERIMENT}.png", f"cost-{DEEP}.svg", "cost.csv"} <= logged  # accuracy against cost


def test_the_parent_run_holds_the_config_the_commit_and_a_link_to_the_report(workflow):
    """What a user opening the workflow's run in the MLflow UI finds, and what opens the experiment on its
    runs (not on MLflow 3's GenAI pages)."""
    workdir, _ = workflow
    client, runs = mlflow_runs(workdir)
    (parent,) = [run for run in runs if run.data.tags["rule"] == "workflow"]
    config = yaml.safe_load(TINY.read_text())
    params = parent.data.params
    assert params["name"] == "test-tiny" and params["methods"] == ", ".join(config["methods"])
    assert params[f"experiments.{EXPERIMENT}.arch"] == "onehidden"
    assert params[f"experiments.{DEEP}.arch_options.widths"] == "24, 16"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == commit
    (report,) = [run for run in runs if run.data.tags["rule"] == "report"]
    experiment_id = parent.info.experiment_id
    assert parent.data.tags["report_run.report"] == report.info.run_id
    note = parent.data.tags["mlflow.note.content"]
    assert f"(#/experiments/{experiment_id}/runs/{report.info.run_id}?workflowType=machine_learning)" in note
    assert "| End Points" in note  # Table 1 in the run's description
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/table1.csv", "report/table1.md", "report/table2.csv"} <= artifacts
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert {"mlflow.sharedViewState.lowloss-methods", "mlflow.sharedViewState.lowloss-paths"} <= set(tags)
    assert "workflowType=machine_learning" in tags["mlflow.note.content"]


def embedded_files(html: str) -> dict[str, bytes]:
    """The files a Snakemake HTML report embeds as data URIs, by name."""
    return {
        name: base64.b64decode(data)
        for name, data in re.findall(r"data:[\w/+.-]+;charset=\w+;filename=([^;]+);base64,([A-Za-z0-9+/=]+)", html)
    }


def test_the_html_report_shows_the_tables_as_tables_and_every_figure(workflow):
    from tests.test_report import page_cells

    workdir, _ = workflow
    snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text()
    files = embedded_files(html)
    # Table 1 is a page the report shows (not only a file to download): its rows are cells of an HTML table.
    shown_as = re.search(rf'"{REPORT}/table1.html": {{.*?"mime_type": "([^"]+)"', html, re.S)
    assert shown_as[1] == "text/html"  # the report opens an HTML result in its page
    page = workdir / "table1-in-report.html"
    page.write_bytes(files["table1.html"])
    rows = {row[0]: row[1:] for row in page_cells(page)}
    table = report_table(workdir)
    for row in table.itertuples():
        assert row.method in rows
        assert f"{row.mean:.2f}" in rows[row.method] and f"{row.std:.2f}" in rows[row.method]
    for name in ("table1.csv", "table2.html", "worst_points.html", "ensembles.html"):
        assert files[name] == (workdir / REPORT / name).read_bytes()
    for figure in FIGURES:  # every figure the run made
        assert files[f"{figure}.svg"] == (workdir / REPORT / f"{figure}.svg").read_bytes()
    text = re.sub(r"(\\n|\s)+", " ", html)  # captions sit in JSON strings, lines broken by \n
    assert "worst accuracy (%) along the path" in text  # Table 1's caption
    assert "The paper's <strong>Fig. 7</strong>" in text or "The paper's **Fig. 7**" in text
    # The landing text: every experiment with its own methods, and every result in the reader's order.
    assert "linear+bfly, ot+wa" in text and ", ".join(yaml.safe_load(TINY.read_text())["methods"]) in text
    labels = [
        "Table 1",
        "Table 2",
        f"Accuracy along the path: {DEEP}",
        f"Accuracy along the path: {EXPERIMENT}",
        f"The layer-wise route (Fig. 5): {DEEP}",
        "Worst points",
        "Ensembles",
        "Ensembles by number of models (Fig. 7)",
        "Ensembles by inference cost",
        f"Accuracy against cost: {DEEP}",
        f"Accuracy against cost: {EXPERIMENT}",
        "Worst accuracy against fitting budget",
        "Worst test accuracy against fitting epochs",
    ]
    link = r'<li><a class=\\"reference external\\" href=\\"javascript:app.showResultInfo[^"]*\\">([^<]+)</a>'
    listed = re.findall(link, text)  # the description is a JSON string: its quotes are escaped
    assert listed == labels


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_server_answers_the_rest_search(workflow, tmp_path):
    workdir, plan = workflow
    port = free_port()
    server = subprocess.Popen(
        [
            Path(sys.executable).parent / "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir}/results/mlflow.db",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(
                    f"{base}/experiments/get-by-name?experiment_name={MLFLOW_EXPERIMENT}", timeout=5
                ) as response:
                    experiment = json.load(response)["experiment"]
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow server did not come up"
                time.sleep(1)
        query = {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": "tags.rule = 'connect'",
            "max_results": 1000,
        }
        request = urllib.request.Request(
            f"{base}/runs/search", data=json.dumps(query).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.load(response)["runs"]
        assert len(runs) == plan["connect"]
        assert all(any(m["key"] == "worst_test_acc" for m in run["data"]["metrics"]) for run in runs)
    finally:
        server.terminate()  # SIGTERM to the main PID stops its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_second_run_has_nothing_to_do(workflow):
    workdir, _ = workflow
    assert planned_jobs(workdir) == Counter()


def test_adding_a_method_runs_only_its_jobs_and_the_report(workflow, tmp_path):
    workdir, _ = workflow
    config = write_config(tmp_path / "more.yaml", lambda c: c["methods"].append("ot+wa"))
    # ot+wa matches what it moves (first-layer rows): its own matchings, its two path tables, the report.
    assert planned_jobs(workdir, config) == Counter(match=2, connect=2, report=1, all=1)


def test_a_curve_between_aligned_networks_trains_its_own_epochs(tmp_path):
    def change(config):
        config["experiments"][DEEP]["methods"].append("ot+wa+polychain-3")
        config["experiments"][DEEP]["curves"] = {
            "epochs": 7,
            "aligned_epochs": 0,
            "lr": 0.02,
            "aligned_lr": 0.005,
            "budget": [3],
        }

    output = snakemake(tmp_path, "--dry-run", config=write_config(tmp_path / "aligned.yaml", change)).stdout
    fits = {
        (re.search(r"--method (\S+)", line)[1], re.search(r"--out \S+/(\S+)\.safetensors", line)[1]): line
        for line in output.splitlines()
        if " fit-curve " in line
    }
    assert {method for method, _ in fits} == {"garipov-polychain-3", "ot+wa+polychain-3"}
    assert "--epochs 0 " in fits["ot+wa+polychain-3", "0-1"] and "--epochs 2 " in fits["garipov-polychain-3", "0-1"]
    assert "--lr 0.005 " in fits["ot+wa+polychain-3", "0-1"]  # aligned_lr, not the curves' lr
    # a budget's fit: its own epochs, the curve's own learning rate
    budget_fit = fits["ot+wa+polychain-3", "0-1.epochs3"]
    assert "--epochs 3 " in budget_fit and "--lr 0.005 " in budget_fit
    assert "--epochs 1 " in fits["garipov-polychain-3", "2-3.epochs1"]  # digits-tiny's budget

    def without_aligned_lr(config):
        change(config)
        del config["experiments"][DEEP]["curves"]["aligned_lr"]

    output = snakemake(tmp_path, "--dry-run", config=write_config(tmp_path / "same.yaml", without_aligned_lr)).stdout
    assert any(
        " fit-curve " in line and "ot+wa+polychain-3 " in line and "--lr 0.02 " in line for line in output.splitlines()
    )


def test_weight_matchings_budget_of_sweeps_reaches_its_connect_jobs_only(tmp_path):
    def change(config):
        config["experiments"][DEEP]["methods"] = ["linear", "weight-matching"]
        config["experiments"][DEEP]["connect"] = {"points": 3, "wm_sweeps": 0}

    output = snakemake(tmp_path, "--dry-run", config=write_config(tmp_path / "wm.yaml", change)).stdout
    connects = [line for line in output.splitlines() if " connect " in line and f"/{DEEP}/" in line]
    matched = [line for line in connects if "--method weight-matching " in line]
    assert matched and all("--wm-sweeps 0 " in line for line in matched)
    assert all("--wm-sweeps" not in line for line in connects if line not in matched)


def test_changing_the_training_epochs_reruns_everything_downstream(workflow, tmp_path):
    workdir, plan = workflow
    config = write_config(tmp_path / "epochs.yaml", lambda c: c["experiments"][EXPERIMENT]["train"].update(epochs=4))
    # the deep experiment's two endpoints, its matching, its two paths and its ensembles are untouched
    assert planned_jobs(workdir, config) == plan - Counter(
        train=2, match=1, connect=2, ensemble=len(ENSEMBLES), ensemble_report=1
    )


def test_deleting_one_path_table_reruns_only_that_job(workflow):
    workdir, _ = workflow
    table = workdir / "results" / EXPERIMENT / "paths" / "linear" / "2-3.csv"
    table.unlink()
    assert planned_jobs(workdir) == Counter(connect=1, report=1, all=1)
    snakemake(workdir)
    assert table.is_file()


def test_a_run_killed_mid_job_completes_with_the_same_table(workflow):
    """SIGKILL snakemake and its running job together; the re-run finishes and the table is identical."""
    workdir, _ = workflow
    reference = {name: (workdir / REPORT / name).read_text() for name in ("table1.csv", "worst_points.csv")}
    paths = workdir / "results" / EXPERIMENT / "paths" / "garipov-polychain-3"
    for table in paths.glob("*.csv"):
        table.unlink()
    log = workdir / "logs" / EXPERIMENT / "paths" / "garipov-polychain-3" / "0-1.log"
    log.unlink()
    run = subprocess.Popen(
        snakemake_command("--configfile", TINY, "--profile", ROOT / "profiles" / "local", "--cores", "1"),
        cwd=workdir,
        env=job_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not log.exists():  # the job has started
        assert run.poll() is None and time.time() < deadline, "the job never started"
        time.sleep(0.2)
    time.sleep(0.5)  # inside the job: python is still importing torch
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (paths / "0-1.csv").exists()  # written atomically: absent, never half a table
    snakemake(workdir, "--unlock")
    snakemake(workdir)  # the profile reruns incomplete jobs
    for name, text in reference.items():
        assert (workdir / REPORT / name).read_text() == text


def test_lint_is_clean():
    result = subprocess.run(
        snakemake_command("--lint"), cwd=ROOT, env=job_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "change,fragment",
    [
        (
            lambda c: c["experiments"][EXPERIMENT]["train"].update(epochs="many"),
            f"config: experiments.{EXPERIMENT}.train.epochs: 'many' is not of type 'integer'",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT].update(trian={"epochs": 3}),
            f"config: experiments.{EXPERIMENT}: Additional properties are not allowed ('trian' was unexpected)",
        ),
        (
            lambda c: c["methods"].append("lineer"),
            f"config: experiments.{EXPERIMENT}: unknown method 'lineer' (did you mean `linear`?)",
        ),
        (
            lambda c: c["experiments"][DEEP]["methods"].append("realnvp-flow"),
            f"config: experiments.{DEEP}: method 'realnvp-flow' applies to networks with one hidden layer, "
            f"not to architecture 'fc3'",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT]["connect"].update(wa_breakpoints=1),
            f"config: experiments.{EXPERIMENT}.connect.wa_breakpoints: 1 is less than the minimum of 2",
        ),
        (
            lambda c: c["experiments"][DEEP].setdefault("curves", {}).update(aligned_lr=0),
            f"config: experiments.{DEEP}.curves.aligned_lr: 0 is less than or equal to the minimum of 0",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT]["curves"].update(budget=[1, -1]),
            f"config: experiments.{EXPERIMENT}.curves.budget.1: -1 is less than the minimum of 0",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT]["connect"].update(screen_swaps="yes"),
            f"config: experiments.{EXPERIMENT}.connect.screen_swaps: 'yes' is not of type 'boolean'",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT]["curves"].update(budget=[1, 1]),
            f"config: experiments.{EXPERIMENT}.curves.budget: [1, 1] has non-unique elements",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT]["arch_options"].update(widths=[8, 8]),
            f"config: experiments.{EXPERIMENT}.arch_options: 'widths' is not one of ['width']",
        ),
        (
            lambda c: c["experiments"][EXPERIMENT].update(pairs=[[0, 10]]),
            f"config: experiments.{EXPERIMENT}.pairs: seed 10 is also in model_set_seeds",
        ),
        (
            lambda c: c["experiments"][DEEP]["ensembles"].update(wa_layers=[3]),
            f"config: experiments.{DEEP}.ensembles.wa_layers: WA(3) is out of range for fc3, whose 3 weight layers",
        ),
        (
            lambda c: c["experiments"][DEEP]["ensembles"].update(sizes=[3]),
            f"config: experiments.{DEEP}.ensembles.sizes: 3 models, but only 2 seeds",
        ),
        (
            lambda c: c["experiments"][DEEP]["ensembles"].update(seeds=[0]),
            f"config: experiments.{DEEP}.ensembles.seeds: [0] is too short",
        ),
    ],
)
def test_a_bad_config_stops_before_any_job_naming_the_key(tmp_path, change, fragment):
    config = write_config(tmp_path / "bad.yaml", change)
    result = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert result.returncode != 0
    assert fragment in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def planned_experiments_and_methods(workdir: Path, config: Path | None) -> tuple[set[str], set[str]]:
    """The experiments and methods of the jobs a dry run plans."""
    output = snakemake(workdir, "--dry-run", config=config).stdout
    return set(re.findall(r"\bexp=([\w.-]+)", output)), set(re.findall(r"\bmethod=([\w+-]+)", output))


def experiments_and_methods(config: dict) -> tuple[set[str], set[str]]:
    """A config's experiments and every method they run (an experiment may have its own list)."""
    return set(config["experiments"]), {
        method
        for experiment in config["experiments"].values()
        for method in experiment.get("methods") or config["methods"]
    }


def test_a_preset_replaces_config_yaml_and_plans_only_its_own_experiments(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")  # as in the project folder, where `make run` runs
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert planned_experiments_and_methods(tmp_path, None) == experiments_and_methods(default)
    preset = ROOT / "configs" / "fashion-mnist.yaml"
    assert planned_experiments_and_methods(tmp_path, preset) == experiments_and_methods(
        yaml.safe_load(preset.read_text())
    )
