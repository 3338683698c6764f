"""scripts/compare_reports.py: two runs' tables joined row by row, the largest difference first."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_reports.py"
HEADER = "method,experiment,split,mean,std,n\n"


@pytest.fixture
def compare():
    return runpy.run_path(str(SCRIPT))


def report(folder: Path, table1: str, table2: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "table1.csv").write_text(HEADER + table1)
    if table2 is not None:
        (folder / "table2.csv").write_text(HEADER + table2)
    return folder


def test_rows_are_joined_and_ordered_by_difference(compare, tmp_path, capsys):
    first = report(tmp_path / "a", "linear,e,test,90.0,1.0,3\narc,e,test,91.0,1.0,3\n", "ot+wa,f,test,95.5,,1\n")
    second = report(tmp_path / "b", "linear,e,test,90.0,1.0,3\narc,e,test,92.5,1.0,3\n")
    table = compare["differences"](first, second)
    assert list(table["method"]) == ["arc", "linear", "ot+wa"]
    assert table["difference"].iloc[0] == pytest.approx(1.5) and table["difference"].iloc[1] == 0
    assert table["mean B"].isna().iloc[2]  # a row of one run only: no difference
    assert compare["main"]([str(first), str(second)]) == 0
    assert "1 of 3 rows identical; largest difference 1.50 points" in capsys.readouterr().out


def test_a_folder_without_tables_is_refused(compare, tmp_path):
    with pytest.raises(SystemExit, match="no report tables"):
        compare["differences"](tmp_path, tmp_path)
