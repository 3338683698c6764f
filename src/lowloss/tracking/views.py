"""What the MLflow UI shows first: saved views of an experiment's runs, and links that open them.

MLflow 3's UI opens an experiment on its GenAI pages unless the address asks for the classic runs view
(`workflowType=machine_learning`; the `mlflow.experimentKind` tag, which earlier 3.x releases read, is
kept for them). Every link lowloss writes carries that switch. A saved view is what the UI's "Share"
button stores: an experiment tag `mlflow.sharedViewState.<key>` holding the table's filter, order,
grouping, columns and charts, opened by `?viewStateShareKey=<key>`. lowloss writes its views on the
experiment (they also show in the UI's Views list) so that the key metrics and tags are the first columns a
user sees. Nothing here imports torch.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

RUNS_VIEW = {"workflowType": "machine_learning"}
"""The query that makes MLflow 3 show the classic runs pages rather than its GenAI pages."""
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"

PATH_COLUMNS = ["experiment", "method", "pair"]
PATH_METRICS = ["worst_test_acc", "worst_train_acc", "barrier_test_acc", "barrier_train_acc", "seconds"]
"""The columns of the path views: what tells a path apart, then how good it is and what it cost."""
CHART_RUNS = 100  # lines a chart draws (MLflow's default is the first 10)
LEADING_COLUMNS = ["1", "attributes.`Run Name`"]  # the table's ids of its checkbox and run name columns
TRAILING_COLUMNS = ["runDateAndNestInfo", "duration"]  # Created, Duration
COLUMN_WIDTHS = {"attributes.`Run Name`": 280, "tags.`experiment`": 150, "tags.`method`": 160}
"""Pixels: `garipov-polychain-3 0-1 · connect · digits-onehidden` and the longest method names uncut."""


def _column(kind: str, key: str) -> str:
    """A column of the runs table, as the UI names it (`tags.`method``)."""
    return f"{kind}.`{key}`"


def _error_chart(split: str) -> dict:
    """Error (%) along the path on a log axis: 2 % and 4 % stand as far apart as 20 % and 40 %, so the
    good methods near the endpoints stay apart while a deep dip stays on the chart."""
    key = f"path/{split}_error"
    return {
        "uuid": f"lowloss-{split}-error",
        "type": "LINE",
        "metricSectionId": "lowloss-path",
        "isGenerated": False,
        "deleted": False,
        "displayName": f"{split} error along the path (%, log axis)",
        "metricKey": key,
        "selectedMetricKeys": [key],
        "scaleType": "log",
        "xAxisKey": "step",
        "xAxisScaleType": "linear",
        "lineSmoothness": 0,
        "runsCountToCompare": CHART_RUNS,
        "range": {},
    }


def _path_view(grouped: bool) -> dict:
    """The `connect` runs with the key metrics as their first columns, best worst-test-accuracy first;
    `grouped`: one row per experiment and method, the mean over its pairs (Tables 1 and 2 in the UI)."""
    columns = [_column("tags", key) for key in PATH_COLUMNS] + [_column("metrics", key) for key in PATH_METRICS]
    view = {
        "searchFilter": "tags.command = 'connect'",
        "orderByKey": _column("metrics", "worst_test_acc"),
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": [*LEADING_COLUMNS, *columns, *TRAILING_COLUMNS],
        "columnWidths": COLUMN_WIDTHS,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [_error_chart("test"), _error_chart("train")],
        "compareRunSections": [
            {"uuid": "lowloss-path", "name": "Along the path", "display": True, "isReordered": True}
        ],
        "isAccordionReordered": True,
    }
    if grouped:
        view["groupBy"] = {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": key} for key in ("experiment", "method")],
        }
    return view


VIEWS = {
    "lowloss-methods": ("lowloss: every method, mean over pairs", _path_view(grouped=True)),
    "lowloss-paths": ("lowloss: every path", _path_view(grouped=False)),
}
"""Saved views by key, with the name the UI's Views list shows: every method's mean over pairs (the one
`make ui` opens), and every path."""
DEFAULT_VIEW = "lowloss-methods"


def experiment_tags(now_ms: int | None = None) -> dict[str, str]:
    """The tags that make an experiment open on its runs, with lowloss's saved views in the envelope the
    UI's Views list reads (`name`, `createdAt`, `updatedAt` and the view as a JSON string; the list puts
    the newest first, so the default view is stamped last)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    tags = {KIND_TAG: KIND}
    for age, (key, (name, view)) in enumerate(VIEWS.items()):
        stamp = now_ms - age
        tags[VIEW_TAG_PREFIX + key] = json.dumps(
            {"name": name, "createdAt": stamp, "updatedAt": stamp, "state": json.dumps(view)}
        )
    return tags


def runs_link(experiment_id: str, view: str | None = None) -> str:
    """The runs of an experiment (in saved view `view`), as an address relative to the UI's root."""
    query = {**({"viewStateShareKey": view} if view else {}), **RUNS_VIEW}
    return f"#/experiments/{experiment_id}/runs?{urlencode(query)}"


def views_markdown(experiment_id: str) -> str:
    """Links to the experiment's saved views, for a description: `[lowloss: every path](#/…) · …`."""
    return " · ".join(f"[{name}]({runs_link(experiment_id, key)})" for key, (name, _) in VIEWS.items())


def run_link(experiment_id: str, run_id: str) -> str:
    """One run's page in the classic runs view, relative to the UI's root (a Markdown link target)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{urlencode(RUNS_VIEW)}"
