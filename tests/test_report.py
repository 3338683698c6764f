"""`lowloss report`: Tables 1 and 2, their layout and numbers, the End Points row, the figures' axes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowloss.errors import LowlossError
from lowloss.results.figures import END_POINTS, legend_entries, route_positions, stage_positions
from lowloss.results.tables import build_report, format_cell
from tests.conftest import assert_one_line_error, run_cli, run_main

ACCURACY = {0: (0.99, 0.97), 1: (0.98, 0.96), 2: (0.97, 0.95), 3: (0.995, 0.99)}  # seed: (train, test)


def path_table(
    method: str,
    legs: list[str],
    acc: float,
    pair: tuple[int, int] = (0, 1),
    points: int = 5,
    arch: str = "onehidden",
    stages: list[int] | None = None,
) -> pd.DataFrame:
    """A path table with a dip to `acc` at the middle of the first leg, the endpoints' accuracies (ACCURACY) at
    both ends and 0.9 elsewhere."""
    rows = []
    for leg, name in enumerate(legs):
        ts = [0.5] if name.startswith("swap") else list(np.linspace(0, 1, points))
        if leg == len(legs) - 1 and 1.0 not in ts:
            ts.append(1.0)  # a table always holds Θ^B
        for t in ts:
            for s, split in enumerate(("train", "test")):
                value = (acc if (leg == 0 and t == 0.5) else 0.9) - (0.01 if split == "test" else 0)
                if leg == 0 and t == 0:
                    value = ACCURACY[pair[0]][s]
                elif leg == len(legs) - 1 and t == 1:
                    value = ACCURACY[pair[1]][s]
                rows.append(
                    dict(
                        method=method,
                        arch=arch,
                        leg=leg,
                        leg_name=name,
                        stage=stages[leg] if stages else 0,
                        t=t,
                        position=leg + t,
                        split=split,
                        loss=1 - value,
                        acc=value,
                    )
                )
    return pd.DataFrame(rows)


@pytest.fixture
def results(tmp_path) -> tuple[Path, list[Path]]:
    """results/exp/paths/*: path tables of two methods on pairs 0-1 and 2-3."""
    root = tmp_path / "results" / "exp"
    csvs = []
    worst = {("linear", "0-1"): 0.5, ("linear", "2-3"): 0.7, ("ot", "0-1"): 0.8, ("ot", "2-3"): 0.85}
    legs = {"linear": ["linear"], "ot": ["ot"] + [f"swap-h1-{k}" for k in range(30)]}
    for (method, pair), acc in worst.items():
        csv = root / "paths" / method / f"{pair}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        path_table(method, legs[method], acc, tuple(map(int, pair.split("-")))).to_csv(csv, index=False)
        csvs.append(csv)
    return tmp_path / "out", csvs


def test_table1_cells_are_mean_and_std_over_pairs_of_the_worst_point(results):
    out, csvs = results
    summary = build_report(csvs, out)
    table = pd.read_csv(out / "table1.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["linear", "ot", "End Points"]
    assert list(table.columns) == [("exp", "train"), ("exp", "test")]
    linear_train = [50.0, 70.0]
    assert table.loc["linear", ("exp", "train")] == f"{np.mean(linear_train):.2f} ± {np.std(linear_train, ddof=1):.2f}"
    ot_test = [79.0, 84.0]
    assert table.loc["ot", ("exp", "test")] == f"{np.mean(ot_test):.2f} ± {np.std(ot_test, ddof=1):.2f}"
    # End Points: every endpoint of the evaluated pairs, as the paths' own tables evaluated it.
    endpoint_test = [100 * ACCURACY[seed][1] for seed in (0, 1, 2, 3)]
    assert table.loc["End Points", ("exp", "test")] == (
        f"{np.mean(endpoint_test):.2f} ± {np.std(endpoint_test, ddof=1):.2f}"
    )
    assert summary["paths"] == 4 and summary["methods"] == 2 and summary["experiments"] == 1
    assert all(Path(f).stat().st_size > 0 for f in summary["files"])


def test_markdown_latex_and_tidy_worst_points(results):
    out, csvs = results
    build_report(csvs, out)
    markdown = (out / "table1.md").read_text()
    assert "| End Points" in markdown and "exp train" in markdown
    latex = (out / "table1.tex").read_text()
    assert r"\multicolumn{2}{c}{exp}" in latex and r"$\pm$" in latex and r"\toprule" in latex
    worst = pd.read_csv(out / "worst_points.csv")
    row = worst[(worst["method"] == "linear") & (worst["pair"] == "0-1") & (worst["split"] == "train")]
    assert row["worst_acc"].item() == pytest.approx(50.0) and row["position"].item() == pytest.approx(0.5)


def test_rows_follow_the_order_of_the_tables_given(results):
    out, csvs = results
    build_report(list(reversed(csvs)), out)
    assert list(pd.read_csv(out / "table1.csv", header=[0, 1], index_col=0).index) == ["ot", "linear", "End Points"]


def test_a_single_pair_shows_no_spread():
    assert format_cell(97.0, float("nan"), 1) == "97.00"
    assert format_cell(97.0, 0.5, 3) == "97.00 ± 0.50"


def test_stage_positions_give_a_permutation_stage_one_share_of_the_axis():
    table = path_table("ot", ["ot"] + [f"swap-h1-{k}" for k in range(30)], 0.8)
    x, breaks = stage_positions(table)
    assert x.min() == 0 and x.max() == 1  # Θ^B: t = 1 of the last swap leg
    first_leg = x[(table["leg"] == 0).to_numpy()]
    assert first_leg.max() == pytest.approx(0.5)  # interpolation leg: one of two stages
    swaps = x[(table["leg"] > 0).to_numpy()]
    assert swaps.min() > 0.5 and np.all(np.diff(np.unique(swaps)) > 0)
    assert list(breaks) == [pytest.approx(0.5)]  # 30 swap legs are not ticked one by one


def test_stage_positions_tick_every_leg_of_a_short_path():
    table = path_table("arc+wa", ["wa-start", "wa-1", "wa-2", "wa-end"], 0.8)
    x, breaks = stage_positions(table)
    assert x.max() == pytest.approx(1.0)
    assert list(breaks) == pytest.approx([0.25, 0.5, 0.75])


def test_figures_are_written_as_png_and_svg(results):
    import matplotlib.image

    out, csvs = results
    build_report(csvs, out)
    image = matplotlib.image.imread(out / "paths.png")
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert (out / "paths.svg").read_text().lstrip().startswith("<?xml")


def deep_results(tmp_path) -> list[Path]:
    """Path tables of an fc3 experiment (Table 2) beside the one-hidden ones: its route methods have stages."""
    root = tmp_path / "results" / "deep"
    csvs = []
    for method, acc in (("ot+wa", 0.6), ("linear", 0.3), ("arc+bfly", 0.5), ("garipov-polychain-3", 0.7)):
        legs, stages = {
            "ot+wa": (["s1-wa-start", "s1-wa-1", "s2-wa-start", "s2-wa-1", "last-layer"], [1, 1, 2, 2, 3]),
            "arc+bfly": (["s1-arc", "s2-arc"], [1, 2]),
        }.get(method, ([method], None))
        csv = root / "paths" / method / "0-1.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        path_table(method, legs, acc, arch="fc3", stages=stages).to_csv(csv, index=False)
        csvs.append(csv)
    return csvs


def test_deep_experiments_make_table_2_in_the_papers_order_and_the_route_figure(results, tmp_path):
    out, csvs = results
    summary = build_report([*csvs, *deep_results(tmp_path)], out)
    one = pd.read_csv(out / "table1.csv", header=[0, 1], index_col=0)
    two = pd.read_csv(out / "table2.csv", header=[0, 1], index_col=0)
    assert list(one.columns) == [("exp", "train"), ("exp", "test")]
    assert list(two.columns) == [("deep", "train"), ("deep", "test")]
    assert list(two.index) == ["linear", "arc+bfly", "ot+wa", "garipov-polychain-3", "End Points"]
    assert two.loc["ot+wa", ("deep", "train")] == "60.00" and two.loc["ot+wa", ("deep", "test")] == "59.00"
    assert {Path(f).name for f in summary["files"]} >= {"table2.md", "table2.tex", "route.png", "route.svg"}


def test_route_positions_give_every_stage_one_unit():
    table = path_table(
        "ot+wa",
        ["s1-wa-start", "s1-wa-1", "s2-wa-start", "s2-wa-1", "last-layer"],
        0.6,
        arch="fc3",
        stages=[1, 1, 2, 2, 3],
    )
    x = route_positions(table)
    assert x.min() == 0 and x.max() == pytest.approx(3)
    for stage in (1, 2, 3):
        inside = x[(table["stage"] == stage).to_numpy()]
        assert inside.min() == pytest.approx(stage - 1) and inside.max() == pytest.approx(stage)


def test_cli_prints_its_summary_last(results):
    out, csvs = results
    result = run_cli("report", *csvs, "--out-dir", out, check=True)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["paths"] == 4 and len(summary["files"]) == 6


def test_a_table_outside_the_results_layout_is_a_one_line_error(tmp_path):
    stray = tmp_path / "path.csv"
    path_table("linear", ["linear"], 0.5).to_csv(stray, index=False)
    assert_one_line_error(
        run_cli("report", stray, "--out-dir", tmp_path / "out"),
        "expected a path table at <experiment>/paths/<method>/<seedA>-<seedB>.csv",
    )
    assert not (tmp_path / "out").exists()


def _set_cell(csv: Path, row: int, column: str, value) -> None:
    table = pd.read_csv(csv)
    table.loc[row, column] = value
    table.to_csv(csv, index=False)


@pytest.mark.parametrize(
    "damage,fragment",
    [
        (lambda csv: _set_cell(csv, 3, "acc", np.nan), "line 5: acc nan"),
        (lambda csv: _set_cell(csv, 0, "acc", 1.7), "line 2: acc 1.7"),
        (lambda csv: _set_cell(csv, 2, "acc", -0.1), "line 4: acc -0.1"),
        (lambda csv: _set_cell(csv, 1, "loss", np.nan), "line 3: loss nan: must be a finite number"),
        (lambda csv: csv.write_bytes(b""), "empty file, not a path table"),
        (lambda csv: csv.write_bytes(b'leg,t\n"1,2\n'), "not a readable CSV"),
        (lambda csv: csv.write_bytes(b"\xff\xfe\x00binary"), "not a readable CSV"),
        (lambda csv: (csv.unlink(), csv.symlink_to(csv.name)), "cannot be read (symbolic link loop)"),
    ],
)
def test_bad_path_tables_are_refused_naming_the_file_and_row(results, capsys, damage, fragment):
    out, csvs = results
    damage(csvs[1])
    with pytest.raises(LowlossError) as error:
        build_report(csvs, out)
    assert str(error.value).startswith(f"{csvs[1]}: ") and fragment in str(error.value)
    assert_one_line_error(run_main(capsys, "report", *csvs, "--out-dir", out), f"{csvs[1]}: ", fragment)
    assert not out.exists()


def test_the_legend_holds_the_methods_of_every_panel_once():
    """A Table 1 and a Table 2 experiment draw different methods; the one legend must name them all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2)
    left.plot([0, 1], [0, 1], label="ot")
    left.plot([0, 1], [0, 1], label=END_POINTS)
    right.plot([0, 1], [0, 1], label="linear+bfly")
    right.plot([0, 1], [0, 1], label="ot")
    handles, labels = legend_entries([left, right], ["linear", "ot", "linear+bfly"])
    plt.close(fig)
    assert labels == ["ot", "linear+bfly", END_POINTS]
    assert handles[1].get_label() == "linear+bfly"
