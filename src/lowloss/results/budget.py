"""Worst accuracy against fitting budget: curves fitted for several numbers of epochs, and what a training-free
path reaches without any.

The paper's case for its methods is that a path built without training comes close to a trained curve; this
table and figure show how many epochs of fitting each curve needs to get there. Rows (tidy, one per network,
curve, pair and budget) come from the workflow's budget paths (`curves: {budget: [...]}`, see `budget_rows`) or
from `scripts/fitting_budget.py`: `network`, `method` (the curve method: its colour), `curve` (the row's label:
the method, or the method and what else sets the fit apart, drawn dotted), `pair`, `epochs`, and the worst
`train` and `test` accuracy along the path (fractions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lowloss.results.figures import SPLITS, budget_epochs, plot_budget
from lowloss.results.html import write_table_page
from lowloss.storage.atomic import write_text_atomic
from lowloss.storage.path_table import worst_row

LEVEL_METHOD = "ot+wa"
"""The training-free path each budget figure shows as a level: the paper's cheapest good path (Table 1)."""
BUDGET_TITLE = "Worst accuracy against fitting budget"
BUDGET_NOTE = ("Worst train and test accuracy (%) along each curve's path after E epochs of fitting (each budget a "
               "fit of its own, its learning-rate schedule spanning the budget), mean over pairs; budget.csv holds "
               "every pair's row.")
BUDGET_FILES = ("budget.csv", "budget.md", "budget.html")


def worst_accuracies(table: pd.DataFrame) -> dict[str, float]:
    """The worst accuracy (a fraction) along one path table, per split it holds (train first)."""
    return {split: float(worst_row(table[table["split"] == split])["acc"]) for split in SPLITS
            if (table["split"] == split).any()}


def budget_rows(runs: Sequence) -> pd.DataFrame:
    """Tidy budget rows from budget paths (`results.tables.PathRun`s with `epochs`): the network is the
    experiment, the curve its method."""
    rows = [dict(network=run.experiment, method=run.method, curve=run.method, pair=run.pair, epochs=run.epochs,
                 **worst_accuracies(run.table)) for run in runs]
    return pd.DataFrame(rows)


def level_rows(runs: Sequence) -> pd.DataFrame:
    """Each pair's worst test accuracy along `LEVEL_METHOD`'s path among `runs` (the figure's levels)."""
    rows = [dict(network=run.experiment, pair=run.pair, label=run.method, test=worst_accuracies(run.table)["test"])
            for run in runs if run.method == LEVEL_METHOD and (run.table["split"] == "test").any()]
    return pd.DataFrame(rows, columns=["network", "pair", "label", "test"])


def budget_means(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per network and curve, in the order they come: the number of pairs, and the mean over pairs of the
    worst train and test accuracy (%) after each budget, columns `train E` and `test E`."""
    splits = [split for split in SPLITS if split in rows]
    mean = rows.groupby(["network", "curve", "epochs"], sort=False)[splits].mean() * 100
    wide = mean.unstack("epochs").sort_index(axis=1, level="epochs", sort_remaining=False)
    wide.columns = [f"{split} {epochs}" for split, epochs in wide.columns]
    wide.insert(0, "pairs", rows.groupby(["network", "curve"], sort=False)["pair"].nunique())
    return wide.reset_index()


def budget_markdown(rows: pd.DataFrame) -> str:
    """`budget_means` as Markdown: a row per network and curve, a train/test cell per budget (an empty one where a
    budget was not measured)."""
    means, epochs = budget_means(rows), budget_epochs(rows)

    def cell(row: dict, budget: int) -> str:
        values = [row.get(f"{split} {budget}") for split in SPLITS]
        return "/".join(f"{value:.2f}" for value in values if value is not None and not pd.isna(value))

    lines = ["| network, curve | " + " | ".join(map(str, epochs)) + " epochs |", "| --- |" + " --- |" * len(epochs)]
    for row in means.to_dict("records"):
        cells = " | ".join(cell(row, budget) for budget in epochs)
        lines.append(f"| {row['network']} ({row['pairs']} pairs), {row['curve']} | {cells} |")
    return "\n".join(lines) + "\n"


def write_budget(out_dir: Path, rows: pd.DataFrame, levels: pd.DataFrame, figure_stem: str = "budget") -> list[Path]:
    """`budget.csv` (every row), `budget.md` (the table), `budget.html` (the report's page) and the figure."""
    csv, markdown, page = (out_dir / name for name in BUDGET_FILES)
    write_text_atomic(csv, rows.to_csv(index=False))
    write_text_atomic(markdown, budget_markdown(rows))
    write_table_page(page, budget_means(rows), BUDGET_TITLE, BUDGET_NOTE)
    return [csv, markdown, page, *plot_budget(rows, levels, out_dir / figure_stem)]
