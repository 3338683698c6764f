"""`lowloss report`: Tables 1 and 2 (numbers, the paper's layout, the page a browser shows), the End Points row,
the figures' layout and formats, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowloss.errors import LowlossError
from lowloss.results.figures import (
    END_POINTS,
    FIGURE_SUFFIXES,
    legend_entries,
    logit_ticks,
    panel_grid,
    route_positions,
    stage_positions,
)
from lowloss.results.tables import build_report, format_cell
from tests.conftest import assert_one_line_error, run_cli, run_main

ACCURACY = {0: (0.99, 0.97), 1: (0.98, 0.96), 2: (0.97, 0.95), 3: (0.995, 0.99)}  # seed: (train, test)
GARIPOV = "garipov-polychain-3"


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


def summary(csv: Path) -> pd.DataFrame:
    """A table's CSV indexed by method, experiment and split (columns mean, std, n)."""
    return pd.read_csv(csv).set_index(["method", "experiment", "split"])


def test_table1_values_are_mean_and_std_over_pairs_of_the_worst_point(results):
    out, csvs = results
    report = build_report(csvs, out)
    table = summary(out / "table1.csv")
    assert list(table.columns) == ["mean", "std", "n"]  # numbers as numbers, the ± in its own column
    assert list(dict.fromkeys(table.index.get_level_values("method"))) == ["linear", "ot", "End Points"]
    linear_train = [50.0, 70.0]
    assert tuple(table.loc["linear", "exp", "train"]) == pytest.approx(
        (np.mean(linear_train), np.std(linear_train, ddof=1), 2)
    )
    ot_test = [79.0, 84.0]
    assert tuple(table.loc["ot", "exp", "test"]) == pytest.approx((np.mean(ot_test), np.std(ot_test, ddof=1), 2))
    # End Points: every endpoint of the evaluated pairs, as the paths' own tables evaluated it.
    endpoint_test = [100 * ACCURACY[seed][1] for seed in (0, 1, 2, 3)]
    assert tuple(table.loc["End Points", "exp", "test"]) == pytest.approx(
        (np.mean(endpoint_test), np.std(endpoint_test, ddof=1), 4)
    )
    assert report["paths"] == 4 and report["methods"] == 2 and report["experiments"] == 1
    assert all(Path(f).stat().st_size > 0 for f in report["files"])


def test_markdown_and_latex_keep_the_papers_layout_and_worst_points_are_tidy(results):
    out, csvs = results
    build_report(csvs, out)
    markdown = (out / "table1.md").read_text()
    linear_train = f"{np.mean([50.0, 70.0]):.2f} ± {np.std([50.0, 70.0], ddof=1):.2f}"
    assert "| End Points" in markdown and "exp train" in markdown and f"| {linear_train} |" in markdown
    latex = (out / "table1.tex").read_text()
    assert r"\multicolumn{2}{c}{exp}" in latex and r"$\pm$" in latex and r"\toprule" in latex
    worst = pd.read_csv(out / "worst_points.csv")
    row = worst[(worst["method"] == "linear") & (worst["pair"] == "0-1") & (worst["split"] == "train")]
    assert row["worst_acc"].item() == pytest.approx(50.0) and row["position"].item() == pytest.approx(0.5)


def page_cells(page: Path) -> list[list[str]]:
    """The rows of the plain table an HTML page holds (what a browser shows without JavaScript too; the
    placeholder row shown while the script loads left out)."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(self.cell.strip())
                self.cell = None

    parser = Cells()
    parser.feed(page.read_text())
    return [row for row in parser.rows if row and not row[0].startswith("Loading ITables")]


def test_the_html_pages_show_every_row_with_its_numbers_and_work_offline(results):
    out, csvs = results
    build_report(csvs, out)
    rows = {row[0]: row[1:] for row in page_cells(out / "table1.html")}
    table = summary(out / "table1.csv")
    for method in ("linear", "ot", "End Points"):  # mean and std of train, then of test, each in its own cell
        expected = [
            f"{table.loc[method, 'exp', split][stat]:.2f}" for split in ("train", "test") for stat in ("mean", "std")
        ]
        assert rows[method] == expected
    worst = page_cells(out / "worst_points.html")
    assert "worst accuracy (%)" in worst[0] and len(worst) == 1 + len(pd.read_csv(out / "worst_points.csv"))
    page = (out / "table1.html").read_text()
    assert "new ITable(" in page and "<script src" not in page and "import " not in page  # its code is inlined


def test_rows_follow_the_order_of_the_tables_given(results):
    out, csvs = results
    build_report(list(reversed(csvs)), out)
    assert list(dict.fromkeys(pd.read_csv(out / "table1.csv")["method"])) == ["ot", "linear", "End Points"]


def test_a_single_pair_shows_no_spread(results):
    assert format_cell(97.0, float("nan"), 1) == "97.00"
    assert format_cell(97.0, 0.5, 3) == "97.00 ± 0.50"
    out, csvs = results
    build_report([csv for csv in csvs if csv.name == "0-1.csv"], out)
    table = summary(out / "table1.csv")
    assert table.loc["linear", "exp", "train"]["n"] == 1 and np.isnan(table.loc["linear", "exp", "train"]["std"])


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


def test_figures_are_written_as_png_svg_and_pdf(results):
    import matplotlib.image

    out, csvs = results
    build_report(csvs, out)
    image = matplotlib.image.imread(out / "paths-exp.png")  # one figure per experiment
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert (out / "paths-exp.svg").read_text().lstrip().startswith("<?xml")
    assert (out / "paths-exp.pdf").read_bytes().startswith(b"%PDF")
    svg = (out / "paths-exp.svg").read_text()
    assert ">linear<" in svg and ">ot<" in svg  # one panel per method, titles kept as text


def test_the_figures_have_one_panel_per_method_titled_and_sharing_their_y_axis(results, tmp_path, monkeypatch):
    from lowloss.results import figures

    out, csvs = results
    drawn = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, stem: drawn.setdefault(stem.name, fig) and [])
    build_report([*csvs, *deep_results(tmp_path)], out)
    assert list(drawn) == ["cost-exp", "cost-deep", "paths-exp", "paths-deep", "route-deep"]  # one per experiment
    for name, methods in (("paths-exp", ["linear", "ot"]), ("paths-deep", ["linear", "ot+wa", "arc+bfly", GARIPOV])):
        fig = drawn[name]
        panels = [ax for ax in fig.get_axes() if ax.axison]
        assert [ax.get_title() for ax in panels] == methods
        assert fig.get_suptitle() == name.removeprefix("paths-")  # titled by its experiment
        for ax in panels:
            assert {line.get_label() for line in ax.get_lines()} >= {"train", "test"}
            assert ax.get_yscale() == "logit"
            assert ax.get_shared_y_axes().joined(ax, panels[0])  # every panel on one y axis
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in panels)  # one legend
        width, height = fig.get_size_inches()
        assert height <= width  # the report scales a figure to its width: all of it shows at once
    route = drawn["route-deep"]
    route_panels = [ax for ax in route.get_axes() if ax.axison]
    assert [ax.get_title() for ax in route_panels] == ["arc+bfly", "ot+wa"]
    assert route_panels[0].get_shared_y_axes().joined(*route_panels)  # one row, one y axis
    assert len(route.legends) == 1 and route.get_supxlabel() and route.get_supylabel() == "error (%)"


def test_the_accuracy_axis_labels_round_values_near_the_endpoints_first():
    assert logit_ticks(0.83, 0.992) == [0.9, 0.95, 0.97, 0.98, 0.99]
    wide = logit_ticks(0.05, 0.999)
    assert len(wide) <= 6 and wide[-1] == 0.999 and wide[0] == 0.05 and all(0.05 <= v <= 0.999 for v in wide)


def test_a_grid_stays_about_as_wide_as_it_is_tall():
    assert panel_grid(2, 5) == (1, 2)
    assert panel_grid(9, 5) == (3, 3)
    assert panel_grid(12, 5) == (3, 4)
    assert panel_grid(21, 5) == (5, 5)
    assert panel_grid(6, 3) == (2, 3)


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
    report = build_report([*csvs, *deep_results(tmp_path)], out)
    one, two = summary(out / "table1.csv"), summary(out / "table2.csv")
    assert set(one.index.get_level_values("experiment")) == {"exp"}
    assert set(two.index.get_level_values("experiment")) == {"deep"}
    order = ["linear", "arc+bfly", "ot+wa", "garipov-polychain-3", "End Points"]
    assert list(dict.fromkeys(two.index.get_level_values("method"))) == order
    assert (two.loc["ot+wa", "deep", "train"]["mean"], two.loc["ot+wa", "deep", "test"]["mean"]) == (60.0, 59.0)
    assert [cell.strip() for cell in (out / "table2.md").read_text().splitlines()[4].split("|")[1:4]] == [
        "ot+wa",
        "60.00",
        "59.00",
    ]
    assert {Path(f).name for f in report["files"]} >= {"table2.md", "table2.html", "table2.tex", "route-deep.pdf"}


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
    assert (
        summary["paths"] == 4 and len(summary["files"]) == 13
    )  # table1 x 4, worst points x 2, cost, paths x 3, cost x 3


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


def test_the_cost_chart_holds_one_mark_per_path_and_marks_the_pareto_front(results):
    out, csvs = results
    seconds = {"linear/0-1": (0, 1, 2), "linear/2-3": (0, 1, 2), "ot/0-1": (12, 3, 5), "ot/2-3": (8, 3, 4)}
    for csv in csvs:
        table = pd.read_csv(csv)
        fit, build, evaluate = seconds[f"{csv.parent.name}/{csv.stem}"]
        table.assign(fit_seconds=fit, build_seconds=build, evaluate_seconds=evaluate).to_csv(csv, index=False)
    build_report(csvs, out)
    cost = pd.read_csv(out / "cost.csv").set_index(["method", "pair"])
    assert cost.loc[("ot", "0-1"), "seconds"] == 20 and cost.loc[("linear", "2-3"), "seconds"] == 3
    assert cost.loc[("ot", "2-3"), "worst_acc"] == pytest.approx(84)  # the test split's worst point
    # linear 2-3 is the cheapest best; ot 2-3 is better still; linear 0-1 and ot 0-1 are beaten at their cost
    assert set(cost.index[cost["pareto"]]) == {("linear", "2-3"), ("ot", "2-3")}
    svg = (out / "cost-exp.svg").read_text()
    assert ">Pareto front<" in svg and ">linear<" in svg and ">ot<" in svg


def test_tables_that_record_no_seconds_leave_the_cost_chart_empty_and_say_so(results):
    out, csvs = results
    build_report(csvs, out)
    assert pd.read_csv(out / "cost.csv").empty
    assert "no path of this experiment records its seconds" in (out / "cost-exp.svg").read_text()


def test_budget_paths_make_the_budget_table_and_figure_and_stay_out_of_table_1(results):
    out, csvs = results
    root = csvs[0].parents[2]
    budget = {0: (0.6, 0.4), 5: (0.85, 0.75)}  # epochs: the dip on pairs 0-1 and 2-3
    for epochs, dips in budget.items():
        for pair, acc in zip(("0-1", "2-3"), dips):
            csv = root / "paths" / GARIPOV / f"{pair}.epochs{epochs}.csv"
            csv.parent.mkdir(parents=True, exist_ok=True)
            path_table(GARIPOV, ["bend-0", "bend-1"], acc, tuple(map(int, pair.split("-")))).to_csv(csv, index=False)
            csvs.append(csv)
    ot_wa = root / "paths" / "ot+wa" / "0-1.csv"  # the level the figure draws
    ot_wa.parent.mkdir()
    path_table("ot+wa", ["ot+wa"], 0.88).to_csv(ot_wa, index=False)
    report = build_report([*csvs, ot_wa], out)
    assert report["paths"] == 5 and report["budget_paths"] == 4
    assert set(summary(out / "table1.csv").index.get_level_values("method")) == {"linear", "ot", "ot+wa", "End Points"}
    rows = pd.read_csv(out / "budget.csv")
    assert list(rows.columns) == ["network", "method", "curve", "pair", "epochs", "train", "test"]
    assert len(rows) == 4 and set(rows["network"]) == {"exp"}
    assert rows.set_index(["pair", "epochs"])["train"][("2-3", 5)] == pytest.approx(0.75)
    lines = (out / "budget.md").read_text().splitlines()
    assert lines[0] == "| network, curve | 0 | 5 epochs |"
    assert lines[2] == f"| exp (2 pairs), {GARIPOV} | 50.00/49.00 | 80.00/79.00 |"  # mean over the two pairs
    assert "Worst accuracy against fitting budget" in (out / "budget.html").read_text()
    for suffix in FIGURE_SUFFIXES:
        assert (out / f"budget{suffix}").stat().st_size > 0


def test_only_budget_paths_are_refused_in_one_line(tmp_path):
    csv = tmp_path / "results" / "exp" / "paths" / GARIPOV / "0-1.epochs2.csv"
    csv.parent.mkdir(parents=True)
    path_table(GARIPOV, ["bend-0", "bend-1"], 0.5).to_csv(csv, index=False)
    assert_one_line_error(
        run_cli("report", csv, "--out-dir", tmp_path / "out"),
        f"{csv}: only budget paths (<pair>.epochs<E>.csv) given; the report needs the paths of Tables 1 and 2 too",
    )


def test_a_swap_leg_row_without_a_loss_is_a_screened_leg_and_no_other_row_may_lack_one(results):
    """`connect --screen-swaps` leaves the loss of screened swap legs empty: such a table reads and reports; an
    empty loss elsewhere, or a loss that is not a number, is still refused."""
    from lowloss.storage.path_table import read_path_table, screened

    out, csvs = results
    ot = csvs[2]
    table = pd.read_csv(ot)
    swaps = table.index[table["leg_name"].str.startswith("swap-")][:4]
    table.loc[swaps, "loss"] = np.nan
    table.to_csv(ot, index=False)
    assert screened(read_path_table(ot)).sum() == 4
    build_report(csvs, out)
    assert set(pd.read_csv(out / "worst_points.csv").query("method == 'ot'")["worst_loss"].notna()) == {True}
    table["loss"] = table["loss"].astype(object)
    table.loc[swaps[0], "loss"] = "none"
    table.to_csv(ot, index=False)
    with pytest.raises(LowlossError, match=f"line {swaps[0] + 2}: loss none: must be a finite number"):
        read_path_table(ot)
