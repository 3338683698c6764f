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


if __name__ == "__main__":
    main(sys.argv[1:])
