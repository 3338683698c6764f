"""`lowloss connect`, `match` and `methods` end to end on digits: the paper's ordering and one-line errors."""

import json
import subprocess

import pandas as pd
import pytest
import torch

from lowloss.storage.path_table import read_path_table
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.train import train_endpoint
from tests.conftest import assert_one_line_error, run_cli, run_main

METHODS = ["linear", "arc", "ot", "linear+wa", "arc+wa", "ot+wa", "linear+bfly", "arc+bfly", "ot+bfly"]
SUMMARY_KEYS = {
    "method",
    "worst_train_acc",
    "worst_test_acc",
    "endpoint_test_acc",
    "seconds",
    "worst_train_loss",
    "worst_test_loss",
    "legs",
    "points",
    "out",
}


def summary(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= set(line)
    return line


@pytest.fixture(scope="module")
def pair(digits_endpoints):
    return digits_endpoints(512, 0), digits_endpoints(512, 1)


def test_every_method_runs_and_keeps_the_papers_ordering(pair, tmp_path, capsys):
    worst = {}
    for method in METHODS:
        matching = []
        if method.startswith("ot"):  # computed once per method and pair, as the workflow does
            matching = ["--matching", tmp_path / f"{method}.safetensors"]
            assert run_main(capsys, "match", *pair, "--method", method, "--out", matching[1]).returncode == 0
        out = tmp_path / f"{method}.csv"
        line = summary(run_main(capsys, "connect", *pair, "--method", method, "--out", out, "--no-progress", *matching))
        assert line["method"] == method and out.exists() and line["seconds"] > 0
        worst[method], endpoint = line["worst_test_acc"], line["endpoint_test_acc"]
    assert worst["arc"] >= worst["linear"]
    for method in ("ot+wa", "arc+wa"):
        assert worst[method] >= endpoint - 0.02, (method, worst[method], endpoint)


def test_connect_json_line_and_saved_breakpoints(pair, tmp_path):
    out, folder = tmp_path / "arc.csv", tmp_path / "path"
    line = summary(
        run_cli(
            "connect",
            *pair,
            "--method",
            "arc+wa",
            "--points",
            "5",
            "--wa-breakpoints",
            "3",
            "--wa-samples",
            "600",
            "--out",
            out,
            "--save-path",
            folder,
            "--no-progress",
            check=True,
        )
    )
    assert line["legs"] == 4 and line["points"] == 4 * 5 and out.exists()
    manifest = json.loads((folder / "path.json").read_text())
    assert [leg["name"] for leg in manifest["legs"]] == ["s1-wa-start", "s1-wa-1", "s1-wa-2", "last-layer"]
    first, last = (
        load_weights(folder / name) for name in ("breakpoint-0000.safetensors", "breakpoint-0004.safetensors")
    )
    for saved, endpoint in ((first, pair[0]), (last, pair[1])):
        assert all(torch.equal(saved.tensors[k], v) for k, v in load_weights(endpoint).tensors.items())


def test_methods_lists_every_method_in_a_table_wrapped_to_the_terminal(capsys, monkeypatch):
    from lowloss.methods.registry import METHODS as REGISTERED

    monkeypatch.setenv("COLUMNS", "100")
    lines = run_main(capsys, "methods").stdout.splitlines()
    assert max(map(len, lines)) <= 100
    starts = [i for i, line in enumerate(lines) if line.split(" ", 1)[0] in REGISTERED]
    assert [lines[i].split()[0] for i in starts] == sorted(REGISTERED)  # one row each, names in the first column
    header = next(line for line in lines if "what it does" in line)
    edges = [header.index(title) for title in ("what it does", "applies to", "also reads")] + [None]
    column = edges[0]
    for i, line in enumerate(lines[starts[0] : starts[-1]], start=starts[0]):  # wrapped within their columns
        assert line[:column].strip() == (line.split()[0] if i in starts else ""), line
    assert all(lines[i][column] != " " for i in starts)  # every description starts in the second column

    def cell(method: str, index: int) -> str:
        """Column `index` (0: what it does) of the method's row, its wrapped lines joined."""
        i = starts[sorted(REGISTERED).index(method)]
        end = next((j for j in starts if j > i), len(lines) - 2)
        return " ".join(" ".join(line[edges[index] : edges[index + 1]] for line in lines[i:end]).split())

    assert cell("ot+wa", 1).startswith("networks that cut into stages") and "--wa-breakpoints" in cell("ot+wa", 2)
    assert cell("realnvp-flow", 1) == "networks with one hidden layer" and "--connector" in cell("realnvp-flow", 2)
    assert cell("linear", 0) == REGISTERED["linear"].description
    assert "+repair after its name" in " ".join(lines[-3:])


def test_bad_input_is_one_line_and_writes_nothing(pair, odd_endpoints, tmp_path, capsys):
    narrow, fc3 = odd_endpoints
    out = tmp_path / "p.csv"
    cases = [
        ([*pair, "--method", "ot+wat"], "unknown method 'ot+wat' (did you mean `ot+wa`?); known: "),
        ([pair[0], narrow, "--method", "linear"], "arch_options"),
        (
            [fc3, fc3, "--method", "realnvp-flow"],
            "method 'realnvp-flow' applies to networks with one hidden layer, not to 'fc3'",
        ),
        ([*pair, "--method", "linear", "--dataset", "synthetic-mnist"], "expects inputs [1, 8, 8]"),
        ([*pair, "--method", "ot+wa", "--wa-breakpoints", "1"], "argument --wa-breakpoints: must be at least 2, got 1"),
        ([*pair, "--method", "ot+wa", "--wa-breakpoints", "0"], "argument --wa-breakpoints: must be at least 2, got 0"),
        ([*pair, "--method", "ot", "--matching", tmp_path / "none.safetensors"], "file not found"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_main(capsys, "connect", *args, "--out", out, "--no-progress"), fragment)
        assert not out.exists()


def test_a_matching_of_other_endpoints_or_another_method_is_refused(pair, odd_endpoints, tmp_path, capsys):
    matching = tmp_path / "m.safetensors"
    assert run_main(capsys, "match", pair[1], pair[0], "--out", matching, "--ot-solver", "scipy").returncode == 0
    result = run_main(capsys, "connect", *pair, "--method", "ot", "--matching", matching, "--out", tmp_path / "p.csv")
    assert_one_line_error(result, "matching was computed for other endpoints")
    result = run_main(
        capsys, "connect", pair[1], pair[0], "--method", "ot+wa", "--matching", matching, "--out", tmp_path / "p.csv"
    )
    assert_one_line_error(result, "matching was computed for method 'ot', not 'ot+wa'")
    fc3 = odd_endpoints[1]
    result = run_main(
        capsys, "connect", fc3, fc3, "--method", "ot", "--matching", matching, "--out", tmp_path / "p.csv"
    )
    assert_one_line_error(result, "matching was computed for other endpoints")
    assert_one_line_error(
        run_main(capsys, "match", *pair, "--method", "arc+wa", "--out", matching), "method 'arc+wa' uses no matching"
    )
    assert not (tmp_path / "p.csv").exists()


def test_deep_networks_connect_through_their_route_with_a_precomputed_matching(odd_endpoints, tmp_path, capsys):
    """fc3 by OT + WA: `match` fits the route on the training split it is told, `connect` checks it did."""
    fc3 = odd_endpoints[1]
    other = tmp_path / "fc3-b.safetensors"
    train_endpoint(
        "fc3", {"widths": [16, 8]}, load_dataset("digits"), TrainConfig(epochs=1, seed=5), other, progress=False
    )
    matching = tmp_path / "m.safetensors"
    fit = ["--wa-samples", "300"]
    assert run_main(capsys, "match", fc3, other, "--method", "ot+wa", *fit, "--out", matching).returncode == 0
    assert load_weights(matching).meta["fitted"] == {"dataset": "digits", "wa_samples": 300, "seed": 0}
    out = tmp_path / "p.csv"
    line = summary(
        run_main(
            capsys,
            "connect",
            fc3,
            other,
            "--method",
            "ot+wa",
            "--matching",
            matching,
            *fit,
            "--points",
            "3",
            "--out",
            out,
            "--no-progress",
        )
    )
    stages = sorted(set(pd.read_csv(out)["stage"]))
    assert line["legs"] > 4 and stages == [1, 2, 3]
    result = run_main(
        capsys,
        "connect",
        fc3,
        other,
        "--method",
        "ot+wa",
        "--matching",
        matching,
        "--out",
        tmp_path / "q.csv",
        "--no-progress",
    )
    assert_one_line_error(result, "matching was computed with", "this connection uses")


def test_screened_swap_legs_leave_their_loss_empty_and_keep_every_accuracy(odd_endpoints, tmp_path, capsys):
    """`--screen-swaps` on fc3's OT path: the same accuracies and worst points, an empty loss on screened rows only
    (the path table still reads), and the summary counts the screened points."""
    fc3 = odd_endpoints[1]
    other = tmp_path / "fc3-b.safetensors"
    train_endpoint(
        "fc3", {"widths": [16, 8]}, load_dataset("digits"), TrainConfig(epochs=1, seed=5), other, progress=False
    )
    lines, tables = {}, {}
    for screen in (False, True):
        out = tmp_path / f"{screen}.csv"
        flags = ["--screen-swaps"] if screen else []
        args = ["connect", fc3, other, "--method", "ot", "--points", "3", *flags, "--out", out, "--no-progress"]
        lines[screen], tables[screen] = summary(run_main(capsys, *args)), read_path_table(out)
    assert tables[True]["acc"].equals(tables[False]["acc"])
    for key in ("worst_train_acc", "worst_test_acc", "worst_test_position", "points"):
        assert lines[True][key] == lines[False][key]
    empty = tables[True]["loss"].isna()
    assert empty.any() and tables[True].loc[empty, "leg_name"].str.startswith("swap-").all()
    assert lines[True]["screened"] == len(tables[True][empty].drop_duplicates(["leg", "t"]))
    assert "screened" not in lines[False]
