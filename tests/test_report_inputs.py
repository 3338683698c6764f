"""What the reports read is checked against its schema (issue: nothing lost): a path table's splits, numbers,
rows and architecture, the same path given twice, an ensemble's metadata; each refusal one line naming the
file, the row or key and the problem. And a learned method's row is the mean over its connector fits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lowloss.results.tables import build_report
from lowloss.storage.weights import read_meta, save_weights
from tests.conftest import assert_one_line_error, hashes, run_main
from tests.test_report import path_table


@pytest.fixture
def tables(tmp_path):
    """results/exp/paths/linear/{0-1,2-3}.csv."""
    root = tmp_path / "results" / "exp" / "paths" / "linear"
    root.mkdir(parents=True)
    files = []
    for pair, worst in (((0, 1), 0.5), ((2, 3), 0.7)):
        files.append(root / f"{pair[0]}-{pair[1]}.csv")
        path_table("linear", ["linear"], worst, pair).to_csv(files[-1], index=False)
    return files


def damaged(csv, change) -> None:
    table = pd.read_csv(csv, dtype=str)
    changed = change(table)
    (table if changed is None else changed).to_csv(csv, index=False)


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda t: t[t["split"] != "test"], "no rows of split 'test'"),
        (lambda t: t[t["split"] != "train"], "no rows of split 'train'"),
        (lambda t: t.loc.__setitem__((3, "split"), "valid"), "line 5: split valid: must be one of train, test"),
        (lambda t: t.loc.__setitem__((2, "position"), "middle"), "line 4: position middle: must be a finite number"),
        (lambda t: t.loc.__setitem__((2, "position"), "nan"), "line 4: position nan: must be a finite number"),
        (lambda t: t.loc.__setitem__((2, "t"), "1.5"), "line 4: t 1.5: must be a finite number in [0, 1]"),
        (lambda t: t.loc.__setitem__((1, "loss"), "inf"), "line 3: loss inf: must be a finite number"),
        (lambda t: t.loc.__setitem__((1, "loss"), "-0.5"), "line 3: loss -0.5: must be a finite number of at least 0"),
        (lambda t: t.loc.__setitem__((1, "leg"), "0.5"), "line 3: leg 0.5: must be an integer"),
        (lambda t: t.loc.__setitem__((1, "arch"), "resnet"), "column arch holds ['onehidden', 'resnet']"),
        (lambda t: t.__setitem__("arch", "resnet"), "arch 'resnet' is neither a known architecture"),
        (lambda t: t.loc.__setitem__((1, "method"), "ot"), "column method holds ['linear', 'ot']"),
        (lambda t: t.loc.__setitem__((2, "position"), "0.9"), "line 4: position 0.9 is not leg + t (0 + 0.25)"),
        (lambda t: t.loc.__setitem__(len(t), t.iloc[4]), "line 12: leg 0, t 0.5, split train appears twice"),
    ],
)
def test_a_path_table_breaking_its_schema_is_named_by_file_row_and_problem(tables, capsys, change, fragment):
    damaged(tables[1], change)
    out = tables[0].parents[3] / "report"
    before = hashes(tables[0].parents[3])
    assert_one_line_error(run_main(capsys, "report", *tables, "--out-dir", out), f"{tables[1]}: ", fragment)
    assert hashes(tables[0].parents[3]) == before


def test_a_path_table_given_twice_is_refused(tables, capsys):
    out = tables[0].parents[3] / "report"
    result = run_main(capsys, "report", *tables, tables[0], "--out-dir", out)
    assert_one_line_error(result, f"{tables[0]}: the path of linear between 0-1 in exp again (already read from")
    assert not out.exists()


def test_a_table_in_the_folder_of_another_method_is_refused(tables, capsys):
    moved = tables[0].parents[1] / "ot" / "0-1.csv"
    moved.parent.mkdir()
    moved.write_bytes(tables[0].read_bytes())
    result = run_main(capsys, "report", moved, "--out-dir", tables[0].parents[3] / "report")
    assert_one_line_error(result, f"{moved}: holds a path of method 'linear', but lies in the folder of 'ot'")


def test_a_learned_methods_row_is_the_mean_and_spread_over_its_connector_fits(tmp_path):
    """Two pairs, three fits each: the row is the mean ± std over the six paths, as the End Points row is
    over the endpoints; the fit is part of each worst point's name."""
    root = tmp_path / "results" / "exp" / "paths" / "realnvp-bijection"
    root.mkdir(parents=True)
    worst = {((0, 1), 0): 0.90, ((0, 1), 1): 0.80, ((0, 1), 2): 0.85, ((2, 3), 0): 0.70, ((2, 3), 1): 0.75}
    worst[((2, 3), 2)] = 0.60
    files = []
    for (pair, fit), acc in worst.items():
        files.append(root / f"{pair[0]}-{pair[1]}.fit{fit}.csv")
        path_table("realnvp-bijection", ["eq7"], acc, pair).to_csv(files[-1], index=False)
    build_report(files, tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "table1.csv")
    row = summary[(summary["method"] == "realnvp-bijection") & (summary["split"] == "train")].squeeze()
    values = 100 * np.array(list(worst.values()))
    assert (
        row["n"] == 6
        and row["mean"] == pytest.approx(values.mean())
        and row["std"] == pytest.approx(values.std(ddof=1))
    )
    assert f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" in (tmp_path / "out" / "table1.md").read_text()
    points = pd.read_csv(tmp_path / "out" / "worst_points.csv")
    learned = points[(points["method"] == "realnvp-bijection") & (points["split"] == "train")]
    assert sorted(learned["pair"]) == sorted(f"{a}-{b}.fit{k}" for ((a, b), k) in worst)


ENSEMBLE_META = {
    "kind": "ensemble",
    "method": "ind",
    "wa_layer": None,
    "size": 2,
    "members": [{"train_acc": 0.9, "test_acc": 0.8, "train_loss": 0.3, "test_loss": 0.5}] * 2,
    "ind_train_acc": 0.95,
    "ind_test_acc": 0.85,
    "ind_train_loss": 0.2,
    "ind_test_loss": 0.4,
    "ind_flops": 200,
    "ind_params": 100,
    "single_flops": 100,
    "single_params": 50,
}


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"size": "two"}, "metadata key size: 'two' is not of type 'integer'"),
        ({"single_flops": 0}, "metadata key single_flops: 0 is less than or equal to the minimum of 0"),
        ({"members": []}, "metadata key members: [] should be non-empty"),
        ({"members": [{"train_acc": 0.9}]}, "metadata key members.0: 'test_acc' is a required property"),
        ({"wa_layer": 2}, "metadata key (top level): 'wa_train_acc' is a required property"),
    ],
)
def test_an_ensemble_whose_metadata_the_report_cannot_use_is_named(tmp_path, capsys, change, fragment):
    folder = tmp_path / "exp" / "ensembles" / "ind"
    folder.mkdir(parents=True)
    good, bad = folder / "size2.safetensors", folder / "size3.safetensors"
    save_weights(good, _tensors(), ENSEMBLE_META)
    save_weights(bad, _tensors(), {**ENSEMBLE_META, **change})
    result = run_main(capsys, "ensemble-report", good, bad, "--out-dir", tmp_path / "out")
    assert_one_line_error(result, f"{bad}: not an ensemble of `lowloss ensemble` ({fragment}")
    assert not (tmp_path / "out").exists()
    assert math.isclose(read_meta(good)["ind_test_acc"], 0.85)


def _tensors() -> dict:
    import torch

    return {"shared.w": torch.ones(2)}
