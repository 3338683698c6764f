"""`lowloss ensemble-report`: the ensembles table (Fig. 7 in numbers), its Markdown and HTML, both figures, errors."""

from __future__ import annotations

import json

import pytest

from lowloss.results.ensembles import BEST_SINGLE, ensembles_table
from lowloss.storage.weights import read_meta
from tests.conftest import assert_one_line_error, copy_model, run_cli, run_main
from tests.test_ensemble import WIDTH


@pytest.fixture(scope="module")
def ensembles(digits_endpoints, tmp_path_factory) -> list:
    """results/exp/ensembles/{ind,wa1}/size{2,3}.safetensors of three trained one-hidden digits models."""
    from lowloss.cli.main import main

    models = [digits_endpoints(WIDTH, seed, 5) for seed in (0, 1, 2)]
    root = tmp_path_factory.mktemp("results") / "exp" / "ensembles"
    files = []
    for method, flag in (("ind", ["--independent"]), ("wa1", ["--wa-layer", "1"])):
        for size in (2, 3):
            out = root / method / f"size{size}.safetensors"
            assert main(["ensemble", *map(str, models[:size]), *flag, "--out", str(out)]) == 0
            files.append(out)
    return files


def test_every_method_starts_at_model_1_and_the_best_single_model_is_the_best_member(ensembles):
    table = ensembles_table(ensembles)
    assert list(dict.fromkeys(table["label"])) == ["Ind", "WA(1)", BEST_SINGLE]
    assert list(table.loc[table["method"] == "ind", "models"]) == [1, 2, 3]
    members = read_meta(ensembles[1])["members"]  # Ind of three
    model1 = table[table["models"] == 1].set_index("method")["test_acc"]
    assert model1["ind"] == model1["wa1"] == pytest.approx(100 * members[0]["test_acc"])
    assert model1["best"] == pytest.approx(100 * max(member["test_acc"] for member in members))
    ind3 = table[(table["method"] == "ind") & (table["models"] == 3)].iloc[0]
    assert ind3["test_acc"] == pytest.approx(100 * read_meta(ensembles[1])["ind_test_acc"])
    assert ind3["flops_ratio"] == ind3["params_ratio"] == 3
    wa = table[table["method"] == "wa1"]
    assert (wa["flops_ratio"] == 1).all() and (wa["params_ratio"] == 1).all()  # one averaged network


def test_markdown_and_figures_are_written(ensembles, tmp_path, capsys):
    result = run_main(capsys, "ensemble-report", *ensembles, "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ensembles"] == 4 and summary["experiments"] == 1
    for stem in ("fig7", "ensembles_cost"):
        for suffix in (".png", ".svg", ".pdf"):
            assert (tmp_path / stem).with_suffix(suffix).stat().st_size > 0
    page = (tmp_path / "ensembles.html").read_text()
    assert "test accuracy (%)" in page and "best single model" in page
    markdown = (tmp_path / "ensembles.md").read_text()
    assert "N = 1 |" in markdown and "N = 3 |" in markdown and "(3.00×)" in markdown
    assert markdown.count("**exp**") == 2  # accuracy with FLOPs, then stored parameters


def test_files_outside_the_layout_or_not_ensembles_are_one_line_errors(ensembles, digits_endpoints, tmp_path):
    stray = copy_model(ensembles[0], tmp_path / "stray.safetensors")
    assert_one_line_error(
        run_cli("ensemble-report", stray, "--out-dir", tmp_path / "out"),
        "expected an ensemble at <experiment>/ensembles/<method>/<name>.safetensors",
    )
    (tmp_path / "exp" / "ensembles" / "ind").mkdir(parents=True)
    model = copy_model(digits_endpoints(WIDTH, 0, 5), tmp_path / "exp" / "ensembles" / "ind" / "model.safetensors")
    assert_one_line_error(
        run_cli("ensemble-report", model, "--out-dir", tmp_path / "out"),
        "model.safetensors: not an ensemble of `lowloss ensemble`",
    )
    assert not (tmp_path / "out").exists()
