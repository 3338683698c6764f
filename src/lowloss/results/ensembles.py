"""The paper's Fig. 7 from a run's ensembles: test accuracy against the number of models, and against cost.

`lowloss ensemble` records its scores and costs in the ensemble file's sidecar; the report reads the
sidecars where the workflow writes them, `<results>/<experiment>/ensembles/<method>/<name>.safetensors`.
Every method's line starts at one model, model 1 itself (an ensemble of one is the model); the best
single model among the members is the reference the paper draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pandas as pd

from lowloss.storage.atomic import ArtifactError, write_text_atomic
from lowloss.storage.header import read_meta, schema_error
from lowloss.errors import LowlossError
from lowloss.results.figures import plot_ensemble_costs, plot_ensembles
from lowloss.results.html import write_table_page

BEST_SINGLE = "best single model"
SCORES = ("train_acc", "test_acc", "train_loss", "test_loss")
COLUMNS = ["experiment", "method", "label", "wa_layer", "models", *SCORES, "flops", "params", "flops_ratio",
           "params_ratio"]
"""ensembles.csv: accuracies in percent, FLOPs per sample and parameters also relative to one model."""
PAGE_HEADINGS = {"label": "method", "models": "models", "train_acc": "train accuracy (%)",
                 "test_acc": "test accuracy (%)", "train_loss": "train loss", "test_loss": "test loss",
                 "flops_ratio": "inference FLOPs (× one model)", "params_ratio": "stored parameters (× one model)",
                 "flops": "FLOPs per sample", "params": "parameters"}
"""The columns of ensembles.html, named for people."""
PAGE_NOTE = ("Ind (independent networks) and every WA(n) (members that share model 1's backbone, their n-th layer "
             "from the last re-fitted), by number of models; the best single model among the members is the mark "
             "an ensemble has to beat to be worth its cost. Click a heading to sort, type in Search to filter rows.")


ACCURACY = {"type": "number", "minimum": 0, "maximum": 1}
LOSS = {"type": "number", "minimum": 0}
COST = {"type": "number", "exclusiveMinimum": 0}
SCORED = {"type": "object", "required": list(SCORES), "properties": {score: ACCURACY if score.endswith("acc")
                                                                       else LOSS for score in SCORES}}
ENSEMBLE_SCHEMA = {
    "type": "object",
    "required": ["method", "wa_layer", "size", "members", "single_flops", "single_params"],
    "properties": {
        "method": {"type": "string", "minLength": 1},
        "wa_layer": {"type": ["integer", "null"], "minimum": 1},
        "size": {"type": "integer", "minimum": 1},
        "members": {"type": "array", "minItems": 1, "items": SCORED},
        "single_flops": COST,
        "single_params": COST,
    },
    "allOf": [
        {"if": {"properties": {"wa_layer": {"type": "null"}}},
         "then": {"required": [f"ind_{key}" for key in (*SCORES, "flops", "params")]},
         "else": {"required": [f"wa_{key}" for key in (*SCORES, "flops", "params")]}},
    ],
    "patternProperties": {"^(ind|wa)_\\w+_acc$": ACCURACY, "^(ind|wa)_\\w+_loss$": LOSS,
                          "^(ind|wa)_(flops|params)$": COST},
}
"""What the ensembles' report reads of an ensemble file's metadata (`lowloss ensemble` writes it)."""
ENSEMBLE_VALIDATOR = jsonschema.Draft202012Validator(ENSEMBLE_SCHEMA)


def method_label(wa_layer: int | None) -> str:
    """`Ind` or `WA(2)`, as in the paper's Fig. 7."""
    return "Ind" if wa_layer is None else f"WA({wa_layer})"


def ensemble_rows(path: str | os.PathLike) -> list[dict]:
    """The rows one ensemble file gives: the ensemble at its size, and model 1 at size 1 on the same line."""
    path = Path(path)
    if path.parent.parent.name != "ensembles":
        raise LowlossError(f"{path}: expected an ensemble at <experiment>/ensembles/<method>/<name>.safetensors")
    meta = read_meta(path)
    error = schema_error(ENSEMBLE_VALIDATOR, meta, limit=120)
    if error is not None:
        raise ArtifactError(f"{path}: not an ensemble of `lowloss ensemble` (metadata {error})")
    wa_layer = meta["wa_layer"]
    prefix = "ind" if wa_layer is None else "wa"
    size, single = meta["size"], meta["members"][0]
    ensemble = {score: meta[f"{prefix}_{score}"] for score in SCORES}
    costs = {kind: (meta[f"{prefix}_{kind}"], meta[f"single_{kind}"]) for kind in ("flops", "params")}
    best = max(meta["members"], key=lambda member: member["test_acc"])
    base = {"experiment": path.parent.parent.parent.name, "method": meta["method"], "label": method_label(wa_layer),
            "wa_layer": wa_layer}
    rows = [{**base, "models": size, **ensemble, **{kind: value for kind, (value, _) in costs.items()}},
            {**base, "models": 1, **{score: single[score] for score in SCORES},
             **{kind: one for kind, (_, one) in costs.items()}},
            {**base, "method": "best", "label": BEST_SINGLE, "wa_layer": None, "models": 1,
             **{score: best[score] for score in SCORES}, **{kind: one for kind, (_, one) in costs.items()}}]
    for row in rows:
        row.update({f"{kind}_ratio": row[kind] / one for kind, (_, one) in costs.items()})
    return rows


def ensembles_table(files: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Tidy table of every ensemble: one row per experiment, method and number of models (accuracy in %).

    Methods run Ind first, then WA(n) from the longest shared backbone (largest n) down, as in Fig. 7;
    the best single model (the best member of any ensemble of the experiment) comes last.
    """
    if not files:
        raise LowlossError("no ensembles given")
    table = pd.DataFrame([row for file in files for row in ensemble_rows(file)], columns=COLUMNS)
    table["wa_layer"] = table["wa_layer"].astype("Int64")
    best = table[table["method"] == "best"]
    best = best.loc[best.groupby("experiment", sort=False)["test_acc"].idxmax()]
    table = pd.concat([table[table["method"] != "best"], best]).drop_duplicates(["experiment", "method", "models"])
    for score in SCORES:
        if score.endswith("acc"):
            table[score] = 100 * table[score]
    order = table["method"].map(lambda m: (m == "best", m != "ind", -int(m[2:]) if m.startswith("wa") else 0))
    experiments = {name: i for i, name in enumerate(dict.fromkeys(table["experiment"]))}
    table = table.assign(_e=table["experiment"].map(experiments), _m=order)
    return table.sort_values(["_e", "_m", "models"], kind="stable").drop(columns=["_e", "_m"]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """Per experiment: test accuracy (%) by number of models with the FLOPs relative to one model, and the
    stored parameters relative to one model."""
    parts = []
    for experiment, rows in table.groupby("experiment", sort=False):
        labels = list(dict.fromkeys(rows["label"]))
        accuracy = rows.pivot(index="label", columns="models", values="test_acc").reindex(labels)
        flops = rows.pivot(index="label", columns="models", values="flops_ratio").reindex(labels)
        params = rows.pivot(index="label", columns="models", values="params_ratio").reindex(labels)
        cells = pd.DataFrame({n: [_cell(a, r) for a, r in zip(accuracy[n], flops[n])] for n in accuracy.columns},
                             index=accuracy.index)
        ratios = params.map(lambda ratio: "" if pd.isna(ratio) else f"{ratio:.2f}×")
        for frame, title in ((cells, "test accuracy (%) by number of models (inference FLOPs per sample, × one model)"),
                             (ratios, "stored parameters (× one model)")):
            frame.index.name, frame.columns = "method", [f"N = {n}" for n in frame.columns]
            parts.append(f"**{experiment}**: {title}\n\n"
                         + frame.to_markdown(colalign=["left"] + ["right"] * len(frame.columns)) + "\n")
    return "\n".join(parts)


def _cell(accuracy: float, ratio: float) -> str:
    return "" if pd.isna(accuracy) else f"{accuracy:.2f} ({ratio:.2f}×)"


def build_ensemble_report(files: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """ensembles.csv, .md and .html, fig7 (accuracy against the number of models) and ensembles_cost
    (accuracy against inference FLOPs) as PNG, SVG and PDF in `out_dir`."""
    out_dir = Path(out_dir)
    table = ensembles_table(files)
    write_text_atomic(out_dir / "ensembles.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "ensembles.md", to_markdown(table))
    page = table[["experiment", *PAGE_HEADINGS]].rename(columns=PAGE_HEADINGS)
    write_table_page(out_dir / "ensembles.html", page, "Ensembles (§6)", PAGE_NOTE)
    written = [out_dir / "ensembles.csv", out_dir / "ensembles.md", out_dir / "ensembles.html"]
    written += plot_ensembles(table, BEST_SINGLE, out_dir / "fig7")
    written += plot_ensemble_costs(table, BEST_SINGLE, out_dir / "ensembles_cost")
    return {"out_dir": str(out_dir), "experiments": int(table["experiment"].nunique()), "ensembles": len(files),
            "files": [str(file) for file in written]}
