"""`make bench`: run every benchmarks/bench_*.py and write benchmarks/RESULTS.md.

Each bench module exposes `run() -> list[dict]`; a row has `name`, `baseline` (what it is compared
with), `value` and `baseline_value` (seconds, bytes, … measured in this same run), `ratio`
(how many times better than the baseline; > 1 is better), optional `target` (ratio aimed for) and
`note`. Nothing here asserts: a benchmark reports, it does not pass or fail.
"""

from __future__ import annotations

import datetime
import importlib
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, {gpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def previous_sections() -> dict[str, str]:
    """The sections of the current RESULTS.md by benchmark name (a partial run keeps the others)."""
    results = HERE / "RESULTS.md"
    if not results.exists():
        return {}
    parts = results.read_text().split("\n## ")[1:]
    return {part.split("\n", 1)[0]: "## " + part.rstrip() + "\n" for part in parts}


def main(selected: list[str]) -> None:
    sys.path.insert(0, str(HERE.parent))
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if selected:
        modules = [m for m in modules if any(s in m for s in selected)]
    sections = previous_sections()
    for name in modules:
        print(f"running {name} …", flush=True)
        rows = importlib.import_module(f"benchmarks.{name}").run()
        lines = [
            f"## {name.removeprefix('bench_')}",
            f"Measured {datetime.date.today().isoformat()} on {machine()}.",
            "",
            "| benchmark | baseline | value | baseline value | ratio | target | met | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            target, ratio = row.get("target"), row.get("ratio")
            met = "" if target is None or ratio is None else ("yes" if ratio >= target else "no")
            lines.append(
                "| "
                + " | ".join(
                    fmt(row.get(k)) for k in ("name", "baseline", "value", "baseline_value", "ratio", "target")
                )
                + f" | {met} | {fmt(row.get('note'))} |"
            )
            print(f"  {row['name']}: ratio {fmt(ratio)} (target {fmt(target)})", flush=True)
        sections[name.removeprefix("bench_")] = "\n".join(lines) + "\n"
    header = [
        "# Benchmarks",
        "",
        "Ratios compare against a baseline measured in the same run; > 1 means lowloss is "
        "faster (or smaller) by that factor. Each section says when and where it was measured.",
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(header) + "\n" + "\n".join(sections[key] for key in sorted(sections)))
    print(f"wrote {HERE / 'RESULTS.md'}")
    write_summary()


SUMMARY = [  # the docs' table of evaluation benchmarks: (what, the RESULTS.md rows it reports, by name)
    (
        "21 points of a leg together, MNIST shapes (784-2000-10, 8192 samples), straight leg",
        ["MNIST shapes: linear leg, 21 points together"],
    ),
    ("same, arc leg", ["MNIST shapes: arc leg, 21 points together"]),
    (
        "same at digits scale (64-512-10, 1797 samples), straight / arc leg",
        ["digits: linear leg, 21 points together", "digits: arc leg, 21 points together"],
    ),
    (
        "same, arc leg, generic vmapped engine (architectures without a shortcut)",
        ["MNIST shapes: arc leg, generic vmapped engine (fast=False)"],
    ),
    (
        "`fc3` (2048, 1024) on CIFAR-10 shapes, 1024 samples: a route stage's leg / an arc leg",
        [
            "fc3 {'widths': [2048, 1024]}: route-stage leg, 21 points",
            "fc3 {'widths': [2048, 1024]}: arc leg (every layer), 21 points",
        ],
    ),
    (
        "`conv2fc1` (32, 64), the same",
        [
            "conv2fc1 {'channels': [32, 64]}: route-stage leg, 21 points",
            "conv2fc1 {'channels': [32, 64]}: arc leg (every layer), 21 points",
        ],
    ),
    (
        "`vgg16` ×0.25, permutation stages of all 13 groups (1237 swap legs), per leg",
        ["vgg16 x0.25: permutation stages of every group (1237 swap legs)"],
    ),
    (
        "WA solve, 8000 × 2001 / 1500 × 2001 features, equal residual",
        [
            "WA solve, overdetermined (8000 samples x 2001 features)",
            "WA solve, underdetermined (1500 samples x 2001 features)",
        ],
    ),
    (
        "permutation stage of a width-2000 one-hidden network, 1989 swap legs, per leg",
        ["swap legs, incremental (1989 legs)"],
    ),
    (
        "OT matching, n = 2000 / 6144, equal cost: SciPy's `linear_sum_assignment` (`--ot-solver scipy`) against",
        ["OT matching, n = 2000", "OT matching, n = 6144"],
    ),
]


def results_rows() -> dict[str, dict[str, str]]:
    """Every row of RESULTS.md by its name: baseline, ratio, target and met."""
    rows = {}
    for section in previous_sections().values():
        for line in section.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if len(cells) == 8 and cells[0] not in ("benchmark", "---"):
                rows[cells[0]] = dict(zip(("baseline", "ratio", "target", "met"), (cells[1], *cells[4:7])))
    return rows


def summary_cell(rows: list[dict[str, str]]) -> str:
    """Ratios joined by " / ", then the target and whether each row met it."""
    ratios = " / ".join(f"{float(row['ratio']):.3g}" for row in rows)
    targets = {row["target"] for row in rows}
    if targets == {""}:
        return ratios
    met = " / ".join(dict.fromkeys("met" if row["met"] == "yes" else "not met" for row in rows))
    return f"{ratios} (≥ {targets.pop()}, {met})" if len(targets) == 1 else ratios


def summary_table(known: dict[str, dict[str, str]]) -> str:
    """The docs' table of evaluation benchmarks (`SUMMARY`), from the rows of RESULTS.md by name."""
    lines = ["| what | baseline | ratio (target) |", "| --- | --- | --- |"]
    for what, names in SUMMARY:
        missing = [name for name in names if name not in known]
        if missing:
            raise SystemExit(f"benchmarks/RESULTS.md has no row {missing[0]!r} (benchmarks/run.py SUMMARY)")
        rows = [known[name] for name in names]
        lines.append(f"| {what} | {rows[0]['baseline']} | {summary_cell(rows)} |")
    return "\n".join(lines) + "\n"


def write_summary() -> None:
    """benchmarks/summary.md, which docs/results.md includes."""
    (HERE / "summary.md").write_text(summary_table(results_rows()))
    print(f"wrote {HERE / 'summary.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
