"""The MLflow store: where it is, the experiment runs go to (described, with its saved views), the lock
that serialises writers of a local store, and the UI's addresses. Nothing here imports torch."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from lowloss.tracking import views

ENV_URI = "MLFLOW_TRACKING_URI"
DEFAULT_URI = "sqlite:///results/mlflow.db"
LOCK_TIMEOUT_S = 300
NOTE_TAG = "mlflow.note.content"  # the run's (or experiment's) description in the MLflow UI
EXPERIMENT_DESCRIPTION = """\
Runs of `lowloss` (low-loss connection of neural-network weight vectors). A workflow invocation is one
parent run (`workflow · <config>`, holding the config as params and the report's tables) with every
job's run nested under it; the links in a run's description lead to the runs that wrote its inputs.

Saved views (`make ui` prints the first; also in the Views menu): {views}. They show the worst accuracy
along the path, the barrier and the seconds first.

- Accuracies and errors are percentages (95.0 = 95 %), as in the report, in every metric.
- `worst_<split>_acc`: the lowest accuracy along the path; `barrier_<split>_acc`: how far it falls below
  the lower endpoint (percentage points); `seconds`: the command's time.
- `history/…`: training curves per epoch (per step for connectors), test accuracy beside train accuracy.
- `path/<split>_acc`, `path/<split>_error`, `path/<split>_loss`: along the path, at step = 1000 × the
  position on the report figure's axis (Θ^A = 0, Θ^B = 1, legs scaled equally), so that methods overlay.
- `table/<experiment>/<method>/<split>_mean` and `_std`: the report's tables, on the report run.
- Params: the command's options and the integers of its result (`rng_seed` seeds a command's random
  choices; the `seed` tag is the seed of the model a run trained).
"""


def experiment_tags(experiment_id: str) -> dict[str, str]:
    """The experiment's description (with links to its saved views) and what opens it on its runs."""
    description = EXPERIMENT_DESCRIPTION.format(views=views.views_markdown(experiment_id))
    return {NOTE_TAG: description, **views.experiment_tags()}


def tracking_uri(args: argparse.Namespace | None = None) -> str:
    return getattr(args, "mlflow_uri", None) or os.environ.get(ENV_URI) or DEFAULT_URI


def quiet_mlflow() -> None:
    """Schema migrations of a new store log dozens of INFO lines; keep warnings only."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, created on first use with its description and saved views; a local store keeps
    artifacts beside its database."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    database = _sqlite_file(uri)
    if database is not None:
        location = (database.parent / "mlartifacts").resolve().as_uri()
    created = client.create_experiment(name, artifact_location=location)
    describe_experiment(client, created)
    return created


def describe_experiment(client, experiment_id: str) -> None:
    """Set (or refresh, on experiments created by older versions) the experiment's description and views."""
    for key, value in experiment_tags(experiment_id).items():
        client.set_experiment_tag(experiment_id, key, value)


def ui_links(uri: str, ui: str) -> list[str]:
    """Where the MLflow UI at `ui` shows each experiment: its saved view of every method (in MLflow 3's
    classic runs pages, `lowloss.tracking.views`)."""
    database = _sqlite_file(uri)
    if database is not None and not database.exists():
        return [f"{ui}/#/experiments?{urlencode(views.RUNS_VIEW)}"]
    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    return [
        f"{experiment.name}: {ui}/{views.runs_link(experiment.experiment_id, views.DEFAULT_VIEW)}"
        for experiment in MlflowClient(tracking_uri=uri).search_experiments()
        if experiment.name != "Default"
    ] or [f"{ui}/#/experiments?{urlencode(views.RUNS_VIEW)}"]


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
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
