"""MLflow tracking of one `lowloss` command: one run with its tags, params, metrics, series and files.

Tracking is on when an experiment is named (`lowloss --mlflow-experiment NAME …` or
$LOWLOSS_MLFLOW_EXPERIMENT, which the workflow sets). The store is `--mlflow-uri`, else
$MLFLOW_TRACKING_URI, else `sqlite:///results/mlflow.db` with artifacts in `results/mlartifacts/`.

What a run holds: the command's arguments as params; the numbers of its summary (the dict `run(args)`
returns) as metrics; series read back from what it wrote — training curves per epoch from a weight
file's sidecar `history`, and loss/accuracy along the path from a path table; its output files as
artifacts (files above a size limit are listed by URI and hash instead of copied). The files are the
source of truth: any tracking failure is a warning and never changes the command's result.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lowloss.artifacts import read_meta, sidecar_path

logger = logging.getLogger(__name__)

ENV_EXPERIMENT = "LOWLOSS_MLFLOW_EXPERIMENT"
ENV_URI = "MLFLOW_TRACKING_URI"
ENV_MAX_ARTIFACT_MB = "LOWLOSS_MLFLOW_MAX_ARTIFACT_MB"
DEFAULT_URI = "sqlite:///results/mlflow.db"
DEFAULT_MAX_ARTIFACT_MB = 16.0
LOCK_TIMEOUT_S = 300
PARAM_MAX_CHARS = 6000  # MLflow's limit on a param value
TAG_KEYS = ("dataset", "arch", "method", "seed", "kind")
"""Argument or summary values promoted to tags, so runs can be filtered by them."""
NOT_PARAMS = {"run", "command", "verbose", "mlflow_experiment", "mlflow_uri", "mlflow_tag"}
PATH_TABLE_COLUMNS = {"split", "position", "acc", "loss"}
CURVE_KEYS = ("history", "curve")
"""Sidecar keys holding a training curve, a list of rows: per epoch (`history` of models and Garipov
curves) or per step (`curve` of connectors)."""


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """The global `--mlflow-*` options of the `lowloss` command."""
    parser.add_argument("--mlflow-experiment", metavar="NAME",
                        help=f"log this command as one MLflow run in experiment NAME (env {ENV_EXPERIMENT})")
    parser.add_argument("--mlflow-uri", metavar="URI",
                        help=f"tracking store or server (env {ENV_URI}; default {DEFAULT_URI})")
    parser.add_argument("--mlflow-tag", metavar="KEY=VALUE", action="append", default=[], type=tag,
                        help="tag of the run (repeatable)")


def tag(text: str) -> tuple[str, str]:
    """'rule=train' -> ('rule', 'train'); argparse reports anything else as a usage error."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def experiment_name(args: argparse.Namespace) -> str | None:
    return getattr(args, "mlflow_experiment", None) or os.environ.get(ENV_EXPERIMENT) or None


def tracking_uri(args: argparse.Namespace) -> str:
    return getattr(args, "mlflow_uri", None) or os.environ.get(ENV_URI) or DEFAULT_URI


def log_command(args: argparse.Namespace, summary: dict | None, start_s: float,
                error: str | None = None) -> str | None:
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
        logger.warning("MLflow tracking failed, results are unaffected (%s: %s)", type(exc).__name__,
                       " ".join(str(exc).split())[:300])
        return None


def _log_run(args: argparse.Namespace, summary: dict, start_s: float, error: str | None,
             experiment: str, uri: str) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # schema migrations of a new store log dozens of INFO lines
        logging.getLogger(name).setLevel(logging.WARNING)
    tags = run_tags(args, summary)
    if error is not None:
        tags["error"] = error[:PARAM_MAX_CHARS]
    files = output_files(args, summary)
    now_ms = int(time.time() * 1000)
    metrics = [Metric(key, value, now_ms, 0) for key, value in summary_metrics(summary).items()]
    metrics += [Metric(key, value, now_ms, step) for path in files for key, value, step in series(path)]
    params = [Param(key, value) for key, value in command_params(args).items()]
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(_experiment_id(client, experiment, uri), start_time=int(start_s * 1000),
                                tags=tags, run_name=run_name(args, tags))
        run_id = run.info.run_id
        try:
            client.log_batch(run_id, metrics=metrics, params=params,
                             tags=[RunTag("mlflow.source.name", f"lowloss {args.command}")])
            client.log_dict(run_id, summary, "summary.json")
            client.log_dict(run_id, {"files": [_log_file(client, run_id, path) for path in files]},
                            "outputs.json")
        except Exception:
            client.set_terminated(run_id, "FAILED")  # not left RUNNING; the caller warns
            raise
        client.set_terminated(run_id, "FAILED" if error is not None else "FINISHED")
    return run_id


def run_tags(args: argparse.Namespace, summary: dict) -> dict[str, str]:
    """The command, TAG_KEYS found in the arguments or summary, then the explicit --mlflow-tag values."""
    tags = {"command": args.command}
    for key in TAG_KEYS:
        value = summary.get(key, getattr(args, key, None))
        if value is not None and not isinstance(value, (dict, list)):
            tags[key] = str(value)
    tags.update(getattr(args, "mlflow_tag", []))
    return tags


def run_name(args: argparse.Namespace, tags: dict[str, str]) -> str:
    """E.g. `connect digits-onehidden arc 0-1`: the command and what distinguishes the job."""
    parts = [tags.get(key) for key in ("experiment", "method", "kind", "curve", "pair", "seed")]
    return " ".join([args.command, *(part for part in parts if part)])


def command_params(args: argparse.Namespace) -> dict[str, str]:
    """The command's arguments as MLflow params (strings, lists joined, long values cut)."""
    params = {}
    for key, value in vars(args).items():
        if key in NOT_PARAMS or value is None or callable(value):
            continue
        text = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        params[key] = text if len(text) <= PARAM_MAX_CHARS else text[:PARAM_MAX_CHARS - 1] + "…"
    return params


def summary_metrics(summary: dict) -> dict[str, float]:
    """The finite numbers of a command's summary (booleans and text stay in summary.json)."""
    return {key: float(value) for key, value in summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def output_files(args: argparse.Namespace, summary: dict) -> list[Path]:
    """The files a command wrote: `--out*` / `--save-path` arguments (folders walked, sidecars
    included) and the summary's `files` list."""
    candidates = [value for key, value in vars(args).items()
                  if value is not None and (key == "out" or key.startswith("out_") or key == "save_path")]
    candidates += summary.get("files", [])
    files: dict[Path, None] = {}
    for candidate in map(Path, candidates):
        if candidate.is_dir():
            files.update(dict.fromkeys(sorted(p for p in candidate.rglob("*") if p.is_file())))
        elif candidate.is_file():
            files[candidate] = None
            if candidate.suffix == ".safetensors" and sidecar_path(candidate).is_file():
                files[sidecar_path(candidate)] = None
    return list(files)


def series(path: Path) -> Iterator[tuple[str, float, int]]:
    """(key, value, step) of the curves in an output: a sidecar's training curve, or a path table."""
    if path.suffix == ".csv":
        yield from _path_series(path)
    elif path.suffix == ".safetensors":
        meta = read_meta(path)
        for key in CURVE_KEYS:
            if isinstance(meta.get(key), list):
                yield from _history_series(meta[key])


def _history_series(history: list) -> Iterator[tuple[str, float, int]]:
    """Training curves: `history/<field>` at step = epoch (or step, or row number)."""
    for index, row in enumerate(history):
        if not isinstance(row, dict):
            continue
        step = int(row.get("epoch", row.get("step", index + 1)))
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)) and math.isfinite(value):
                yield f"history/{key}", float(value), step


def _path_series(path: Path) -> Iterator[tuple[str, float, int]]:
    """Loss and accuracy along the path: `path/<split>_<acc|loss>` at step = point index along the
    path, with `path/position` (leg index + t) at the same steps to read them against."""
    import pandas as pd

    table = pd.read_csv(path)
    if not PATH_TABLE_COLUMNS <= set(table.columns):
        return
    for split, rows in table.groupby("split", sort=True):
        rows = rows.sort_values("position", kind="stable").reset_index(drop=True)
        for step, row in rows.iterrows():
            yield f"path/{split}_acc", float(row["acc"]), int(step)
            yield f"path/{split}_loss", float(row["loss"]), int(step)
            if split == "test":
                yield "path/position", float(row["position"]), int(step)


def _log_file(client, run_id: str, path: Path) -> dict:
    """Copy `path` into the run's artifacts, or, above the size limit, only describe it."""
    limit = float(os.environ.get(ENV_MAX_ARTIFACT_MB, DEFAULT_MAX_ARTIFACT_MB)) * 2**20
    size = path.stat().st_size
    entry = {"path": str(path), "uri": path.resolve().as_uri(), "bytes": size, "logged": size <= limit}
    if path.suffix == ".safetensors":
        entry["sha256"] = read_meta(path).get("sha256")
    if entry["logged"]:
        client.log_artifact(run_id, str(path), artifact_path="outputs")
    return entry


def _experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, created on first use; a local store keeps artifacts beside its database."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    database = _sqlite_file(uri)
    if database is not None:
        location = (database.parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise writers of one sqlite store.

    Concurrent jobs that find no database race to create its schema (one fails with "duplicate column"),
    and writers can hit "database is locked"; a lock file beside the database avoids both. Servers and
    other stores take no lock.
    """
    database = _sqlite_file(uri)
    if database is None:
        yield
        return
    from filelock import FileLock  # a dependency of torch

    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock", timeout=LOCK_TIMEOUT_S):
        yield
