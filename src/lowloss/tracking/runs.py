"""MLflow tracking of one `lowloss` command: one run with its tags, params, metrics, series, files and
lineage.

Tracking is on when an experiment is named (`lowloss --mlflow-experiment NAME …` or
$LOWLOSS_MLFLOW_EXPERIMENT, which the workflow sets). The store is `--mlflow-uri`, else
$MLFLOW_TRACKING_URI, else `sqlite:///results/mlflow.db` with artifacts in `results/mlartifacts/`.

What a run holds: the command's arguments and the integers of its summary (seeds, epochs, counts) as
params; the summary's other numbers (losses, seconds, accuracies in percent as the report shows them,
and a path's barrier) as metrics; what
`lowloss.tracking.outputs` reads back from the files it wrote (curves, tables, figures); its output files
as artifacts (files above a size limit are listed by URI and hash instead of copied); and, from
`lowloss.tracking.lineage`, the runs that made its inputs, its dataset, git commit and parent run. The files
are the source of truth: any tracking failure is a warning and never changes the command's result.
Nothing here imports torch, so `lowloss --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import time
from pathlib import Path

from lowloss.tracking import lineage
from lowloss.tracking import outputs as tracked_outputs
from lowloss.tracking.store import DEFAULT_URI, ENV_URI, NOTE_TAG, experiment_id, quiet_mlflow, store_lock, tracking_uri

logger = logging.getLogger(__name__)

ENV_EXPERIMENT = "LOWLOSS_MLFLOW_EXPERIMENT"
ENV_MAX_ARTIFACT_MB = "LOWLOSS_MLFLOW_MAX_ARTIFACT_MB"
DEFAULT_MAX_ARTIFACT_MB = 16.0
PARAM_MAX_CHARS = 6000  # MLflow's limit on a param value
TRACKING_ERROR_TAG = "tracking_error"
"""Why a run whose command succeeded is FAILED: its files or metrics could not all be logged."""
TAG_KEYS = ("experiment", "dataset", "arch", "method")
"""Argument or summary values promoted to tags, so runs can be filtered by them."""
MODEL_SEED = "seed"
"""The `seed` tag is the seed of the model a run trained (the summary's `seed`, or the workflow's tag)."""
RENAMED_PARAMS = {"seed": "rng_seed"}
"""A command's `--seed` seeds its random choices; only for `train` is that also the model's seed."""
NOT_PARAMS = {"run", "command", "verbose", "mlflow_experiment", "mlflow_uri", "mlflow_tag"}
PERCENT_METRIC = re.compile(r"(^|[/_])(acc|error)$")
"""Accuracies and errors (`test_acc`, `history/train_acc`, `path/test_error` …) are logged in percent."""
PERCENT_DECIMALS = 4  # far below one sample of a test set, and short enough to read in the UI's table
BARRIER = "barrier_{split}_acc"
"""How far a path's worst accuracy falls below its lower endpoint's (`endpoint_<split>_acc` minus
`worst_<split>_acc` of `lowloss connect`), in percentage points."""
NAME_PARTS = ("method", "pair")
"""What tells runs of one command apart leads the run's name: `ot+wa 0-1 · connect · digits-onehidden`."""


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """The global `--mlflow-*` options of the `lowloss` command."""
    parser.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        help=f"log this command as one MLflow run in experiment NAME (env {ENV_EXPERIMENT})",
    )
    parser.add_argument(
        "--mlflow-uri", metavar="URI", help=f"tracking store or server (env {ENV_URI}; default {DEFAULT_URI})"
    )
    parser.add_argument(
        "--mlflow-tag", metavar="KEY=VALUE", action="append", default=[], type=tag, help="tag of the run (repeatable)"
    )


def tag(text: str) -> tuple[str, str]:
    """'rule=train' -> ('rule', 'train'); argparse reports anything else as a usage error."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def experiment_name(args: argparse.Namespace) -> str | None:
    return getattr(args, "mlflow_experiment", None) or os.environ.get(ENV_EXPERIMENT) or None


def log_command(args: argparse.Namespace, summary: dict | None, start_s: float, error: str | None = None) -> str | None:
    """Log one finished (or, with `error`, failed) command as an MLflow run; return its id.

    Returns None without touching MLflow when tracking is off, and None with a warning when tracking
    fails for any reason: the command's own files stay valid either way.
    """
    experiment = experiment_name(args)
    if experiment is None:
        return None
    try:
        return _log_run(args, summary or {}, start_s, error, experiment, tracking_uri(args))
    except Exception as exc:  # tracking must never cost a result
        logger.warning(
            "MLflow tracking failed, results are unaffected (%s: %s)",
            type(exc).__name__,
            " ".join(str(exc).split())[:300],
        )
        return None


def _log_run(
    args: argparse.Namespace, summary: dict, start_s: float, error: str | None, experiment: str, uri: str
) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    tags = {**run_tags(args, summary), **lineage.provenance_tags(), **lineage.output_tags(args)}
    if error is not None:
        tags["error"] = error[:PARAM_MAX_CHARS]
    files = tracked_outputs.output_files(args, summary)
    now_ms = int(time.time() * 1000)
    metrics = [Metric(key, in_percent(key, value), now_ms, 0) for key, value in summary_metrics(summary).items()]
    metrics += [
        Metric(key, in_percent(key, value), now_ms, step)
        for path in files
        for key, value, step in tracked_outputs.series(path)
    ]
    metrics += [
        Metric(key, value, now_ms, 0)
        for path in files
        if tracked_outputs.is_table(path)
        for key, value in tracked_outputs.table_metrics(path).items()
    ]
    params = [Param(key, value) for key, value in run_params(args, summary).items()]
    figures = tracked_outputs.path_figures(files)  # drawn before taking the store's lock
    dataset = lineage.dataset_input(args)
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp_id = experiment_id(client, experiment, uri)
        inputs = lineage.input_files(args)
        producers = lineage.producing_runs(client, exp_id, inputs)
        tags.update(lineage.input_tags(producers))
        tags.update(lineage.input_digest_tags(inputs))
        note = "\n".join(
            filter(None, [tracked_outputs.tables_markdown(files), lineage.inputs_markdown(exp_id, producers)])
        )
        if note:
            tags[NOTE_TAG] = note
        run = client.create_run(exp_id, start_time=int(start_s * 1000), tags=tags, run_name=run_name(args, tags))
        run_id = run.info.run_id
        try:
            client.log_batch(
                run_id, metrics=metrics, params=params, tags=[RunTag("mlflow.source.name", f"lowloss {args.command}")]
            )
            if dataset is not None:
                client.log_inputs(run_id, datasets=[dataset])
            for name, figure in figures.items():
                client.log_figure(run_id, figure, f"figures/{name}")
            client.log_dict(run_id, summary, "summary.json")
            client.log_dict(run_id, {"files": [_log_file(client, run_id, path) for path in files]}, "outputs.json")
        except Exception as exc:  # not left RUNNING, and the run says why; the caller warns
            with contextlib.suppress(Exception):
                client.set_tag(run_id, TRACKING_ERROR_TAG, f"{type(exc).__name__}: {exc}"[:PARAM_MAX_CHARS])
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FAILED" if error is not None else "FINISHED")
    return run_id


def run_tags(args: argparse.Namespace, summary: dict) -> dict[str, str]:
    """The command, TAG_KEYS found in the arguments or summary, the model's seed, then the explicit
    --mlflow-tag values."""
    tags = {"command": args.command}
    given = {**vars(args), "dataset": lineage.dataset_name(args)}
    for key in TAG_KEYS:
        value = summary.get(key, given.get(key))
        if value is not None and not isinstance(value, (dict, list)):
            tags[key] = str(value)
    if summary.get(MODEL_SEED) is not None:
        tags[MODEL_SEED] = str(summary[MODEL_SEED])
    tags.update(getattr(args, "mlflow_tag", []))
    return tags


def run_name(args: argparse.Namespace, tags: dict[str, str]) -> str:
    """What differs first, then the command and the experiment: `ot+wa 0-1 · connect · digits-onehidden`,
    `seed3 · train · digits-onehidden` (the UI cuts long names at the end)."""
    parts = [tags[key] for key in NAME_PARTS if tags.get(key)]
    if tags.get(MODEL_SEED):
        parts.append(f"seed{tags[MODEL_SEED]}")
    return " · ".join(filter(None, [" ".join(parts), args.command, tags.get("experiment")]))


def run_params(args: argparse.Namespace, summary: dict) -> dict[str, str]:
    """The command's arguments, then the integers of its summary (a summary integer that repeats an
    argument is left out; one that differs from its argument is `summary.<key>`)."""
    params = command_params(args)
    for key, value in summary.items():
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if key not in params:
            params[key] = str(value)
        elif params[key] != str(value):
            params[f"summary.{key}"] = str(value)
    return params


def command_params(args: argparse.Namespace) -> dict[str, str]:
    """The command's arguments as MLflow params (strings, lists joined, long values cut)."""
    params = {}
    for key, value in vars(args).items():
        if key in NOT_PARAMS or value is None or callable(value):
            continue
        text = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        params[RENAMED_PARAMS.get(key, key)] = (
            text if len(text) <= PARAM_MAX_CHARS else text[: PARAM_MAX_CHARS - 1] + "…"
        )
    return params


def summary_metrics(summary: dict) -> dict[str, float]:
    """The finite non-integer numbers of a command's summary (integers are params; text and booleans
    stay in summary.json), and a path's barrier per split where the summary has both its accuracies."""
    metrics = {key: float(value) for key, value in summary.items() if isinstance(value, float) and math.isfinite(value)}
    for split in ("train", "test"):
        worst, ends = metrics.get(f"worst_{split}_acc"), metrics.get(f"endpoint_{split}_acc")
        if worst is not None and ends is not None:
            metrics[BARRIER.format(split=split)] = ends - worst
    return metrics


def in_percent(key: str, value: float) -> float:
    """An accuracy or error (a fraction in summaries and files) in percent; any other metric as it is."""
    return round(100 * value, PERCENT_DECIMALS) if PERCENT_METRIC.search(key) else value


def _log_file(client, run_id: str, path: Path) -> dict:
    """Copy `path` into the run's artifacts, or, above the size limit, only describe it."""
    limit = float(os.environ.get(ENV_MAX_ARTIFACT_MB, DEFAULT_MAX_ARTIFACT_MB)) * 2**20
    size = path.stat().st_size
    entry = {"path": str(path), "uri": path.resolve().as_uri(), "bytes": size, "logged": size <= limit}
    if path.suffix == ".safetensors":
        entry["sha256"] = lineage.file_digest(path)
    if entry["logged"]:
        client.log_artifact(run_id, str(path), artifact_path="outputs")
    return entry
