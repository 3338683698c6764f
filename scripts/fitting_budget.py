"""Worst accuracy against fitting budget on a real dataset, and what the route costs against a trained curve.

For one network (`--arch`, `--options`) on `--dataset`: trains 2·`--pairs` endpoints on the endpoint schedule
(`--epochs`; the fashion-mnist config's 20 epochs, lr 0.01, batch 128, weight decay 1e-4), then per pair

- builds `ot+wa` (matching + route) and evaluates it at `--points` per leg, each timed (the build after an
  untimed first one that pays the process's one-time start-up costs, as `benchmarks/bench_cheapest.py` does;
  the curves' fits come after it and find them paid);
- fits the cold curve (garipov-polychain-3), the aligned one (aligned-polychain-3) and the route-started one
  (ot+wa+polychain-3) for 0, 1, 2, 5, 10 and 20 epochs (`--budgets`; each budget a fit of its own, as
  `fit-curve --epochs E` would make it: the learning-rate schedule spans the budget, from `--lr`, `--aligned-lr`
  for aligned curves, both the endpoint schedule's 0.01 by default), and evaluates each at `--points` per leg
  (an aligned curve's permutation stage, the same at every budget, once per curve and pair; its seconds count
  in every row).

Every result is a row of `WORK/rows.csv`, written as it is measured: an interrupted run resumes where it stopped.
A row records its fit's learning rate: a run with other rates (`--curves aligned-polychain-3 --aligned-lr 0.001`)
adds rows to the same file, shown in the table labelled with their rate.
`--render OUT WORK...` joins the rows of several networks into `OUT/budget.md` (the table: worst train/test
accuracy, mean over pairs, per budget; also as a sortable page, `OUT/budget.html`), `OUT/cost.md` (seconds:
`ot+wa` end to end and built against the cold curve at the endpoint schedule's epochs), the figure
`OUT/budget.{png,svg,pdf}` and every curve's row, `OUT/budget.csv` (the table and figure are the workflow report's,
`lowloss.results.budget`; the workflow makes them from its own fits with `curves: {budget: [...]}`).

    python scripts/fitting_budget.py --arch fc3 --options '{"widths": [768, 384]}' --points 11 \\
        --work results/fitting-budget/fc3
    python scripts/fitting_budget.py --render results/report/fashion-budget results/fitting-budget/*
    python scripts/docs_tables.py results/report/fashion-budget    # into docs/results/ and the README

Timings are wall-clock seconds of one process with `--threads` torch threads; compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_cheapest import BUDGETS, CURVES, fitted, network_label  # noqa: E402
from lowloss.evaluate import evaluate_path, worst_points  # noqa: E402
from lowloss.methods.context import Context, Options  # noqa: E402
from lowloss.methods.registry import CURVES as CURVE_KINDS  # noqa: E402
from lowloss.methods.registry import get_method  # noqa: E402
from lowloss.nets.network import Network  # noqa: E402
from lowloss.paths.legs import Path as ConnectionPath  # noqa: E402
from lowloss.paths.swaps import SwapLeg  # noqa: E402
from lowloss.results.budget import LEVEL_METHOD as ROUTE  # noqa: E402
from lowloss.results.budget import write_budget
from lowloss.storage.atomic import write_text_atomic  # noqa: E402
from lowloss.storage.model_files import load_model  # noqa: E402
from lowloss.training.config import TrainConfig  # noqa: E402
from lowloss.training.data import load_dataset  # noqa: E402
from lowloss.training.device import pick_device  # noqa: E402
from lowloss.training.train import train_endpoint  # noqa: E402

COLUMNS = ("network", "pair", "method", "epochs", "lr", "build_s", "fit_s", "evaluate_s", "train", "test", "points")
COLD = CURVES[0]


def fit_lr(args: argparse.Namespace, method: str) -> float | None:
    """The learning rate `method`'s fits start from here (`--aligned-lr` for aligned curves, `--lr` for the
    others), None for the route (no fit)."""
    if method == ROUTE:
        return None
    return args.aligned_lr if CURVE_KINDS[method].align is not None else args.lr


def endpoints(args: argparse.Namespace, data) -> list[Path]:
    """The endpoints' files, trained where missing (seed k for endpoint k)."""
    files = []
    for seed in range(2 * args.pairs):
        out = args.work / f"{args.arch}-{seed}.safetensors"
        if not out.exists():
            config = TrainConfig(epochs=args.epochs, lr=0.01, batch_size=128, weight_decay=1e-4, seed=seed)
            train_endpoint(args.arch, args.options, data, config, out, progress=True)
        files.append(out)
    return files


def measured(ctx: Context, method: str, points: int, stages: dict | None = None) -> tuple[dict, float, float]:
    """(worst points, build seconds, evaluate seconds) of `method`'s path.

    An aligned curve's permutation stage (its swap legs, from the matched Θ^B to Θ^B) does not depend on the
    fit: with `stages`, it is evaluated once per method and its table and seconds reused for every budget (the
    seconds count in each row, as each fit's user pays them)."""
    start = time.perf_counter()
    path = get_method(method).build(*(artifact.tensors for artifact in ctx.endpoints), ctx)
    built = time.perf_counter()
    swaps = [leg for leg in path.legs if isinstance(leg, SwapLeg)]
    if stages is None or not swaps:
        table = evaluate_path(ctx.network, path, ctx.data, points, progress=False)
        return worst_points(table), built - start, time.perf_counter() - built
    if method not in stages:
        stage_start = time.perf_counter()
        stage = evaluate_path(ctx.network, ConnectionPath(swaps, method), ctx.data, points, progress=False)
        stages[method] = (stage, len(swaps), time.perf_counter() - stage_start)
    stage, count, stage_s = stages[method]
    if count != len(swaps):
        raise RuntimeError(f"{method}: the permutation stage changed between budgets ({count} against {len(swaps)})")
    curve_start = time.perf_counter()
    table = evaluate_path(
        ctx.network,
        ConnectionPath([leg for leg in path.legs if not isinstance(leg, SwapLeg)], method),
        ctx.data,
        points,
        progress=False,
    )
    evaluate_s = time.perf_counter() - curve_start + stage_s
    return worst_points(pd.concat([table, stage], ignore_index=True)), built - start, evaluate_s


def append(rows_file: Path, row: dict) -> None:
    """Add a row to the file, rewritten whole and atomically: a kill leaves the rows measured so far, never half
    a line."""
    rows = pd.read_csv(rows_file) if rows_file.exists() else pd.DataFrame(columns=list(COLUMNS))
    write_text_atomic(rows_file, pd.concat([rows, pd.DataFrame([row])[list(COLUMNS)]]).to_csv(index=False))


def fresh_fit(folder: Path, method: str, epochs: int) -> None:
    """Remove what an interrupted fit of `method` at `epochs` left (its checkpoint, or a curve whose row was
    never written), so that the fit is timed from its first epoch."""
    for leftover in folder.glob(f"{method}-{epochs}.*"):
        leftover.unlink()


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    rows_file = args.work / "rows.csv"
    done = set()
    if rows_file.exists():
        done = {
            (r.pair, r.method, int(r.epochs), None if pd.isna(r.lr) else float(r.lr))
            for r in pd.read_csv(rows_file).itertuples()
        }
    data = load_dataset(args.dataset, root=args.data_root, device=pick_device())
    files = endpoints(args, data)
    network = network_label(args.arch, args.options)
    for k in range(args.pairs):
        pair = f"{2 * k}-{2 * k + 1}"
        (model, art_a), (_, art_b) = load_model(files[2 * k]), load_model(files[2 * k + 1])
        options = Options(progress=False, wa_samples=args.wa_samples)
        ctx = Context(Network(model.to(data.x_train.device)), data, options, (art_a, art_b))
        base = {"network": network, "pair": pair, "points": args.points}
        (args.work / pair).mkdir(exist_ok=True)
        if (pair, ROUTE, -1, None) not in done:
            get_method(ROUTE).build(art_a.tensors, art_b.tensors, ctx)  # a warm-up: one-time start-up costs
            found, build_s, evaluate_s = measured(ctx, ROUTE, args.points)
            row = dict(base, method=ROUTE, epochs=-1, lr=None, build_s=build_s, fit_s=0.0, evaluate_s=evaluate_s)
            append(rows_file, row | {"train": found["train"]["acc"], "test": found["test"]["acc"]})
        stages: dict = {}
        for method in args.curves:
            lr = fit_lr(args, method)
            for epochs in args.budgets:
                if (pair, method, epochs, lr) in done:
                    continue
                fresh_fit(args.work / pair, method, epochs)
                curve_ctx, fit_s = fitted(ctx, method, epochs, args.work / pair, lr)
                found, build_s, evaluate_s = measured(curve_ctx, method, args.points, stages)
                row = dict(base, method=method, epochs=epochs, lr=lr, build_s=build_s, fit_s=fit_s)
                row["evaluate_s"] = evaluate_s
                append(rows_file, row | {"train": found["train"]["acc"], "test": found["test"]["acc"]})
                print(f"{network} {pair} {method} {epochs} epochs: {row | {'test': found['test']['acc']}}", flush=True)


def curve_label(method: str, lr: float) -> str:
    """A curve's name, with its learning rate where that is not the endpoint schedule's."""
    return method if lr == TrainConfig.lr else f"{method}, lr {lr:g}"


def curves_in_order(rows: pd.DataFrame) -> pd.DataFrame:
    """The curves' rows, each network's curves in `CURVES` order, the endpoint schedule's learning rate first."""
    curves = rows[rows["method"] != ROUTE].copy()
    curves["order"] = [CURVES.index(m) + (lr != TrainConfig.lr) / 2 for m, lr in zip(curves["method"], curves["lr"])]
    network_order = {network: k for k, network in enumerate(dict.fromkeys(rows["network"]))}
    curves["network_order"] = curves["network"].map(network_order)
    return curves.sort_values(["network_order", "order", "pair", "epochs"], kind="stable")


def cost_table(rows: pd.DataFrame) -> str:
    """Per network and pair: `ot+wa` end to end and its construction against the cold curve at the endpoint
    schedule's epochs (fit + evaluate; fit alone), with both worst test accuracies."""
    lines = [
        "| network, pair | ot+wa build + evaluate (s) | cold curve fit + evaluate (s) | end to end | "
        "build against fit | worst test: ot+wa / cold curve (%) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    last = max(BUDGETS)
    for (network, pair), group in rows.groupby(["network", "pair"], sort=False):
        route = group[group["method"] == ROUTE]
        cold = group[(group["method"] == COLD) & (group["epochs"] == last)]
        if route.empty or cold.empty:
            continue  # a pair measured only in part
        route, cold = route.iloc[0], cold.iloc[0]
        route_s, cold_s = route.build_s + route.evaluate_s, cold.fit_s + cold.evaluate_s
        lines.append(
            f"| {network}, {pair} | {route.build_s:.1f} + {route.evaluate_s:.1f} | {cold.fit_s:.1f} + "
            f"{cold.evaluate_s:.1f} | {cold_s / route_s:.1f}× | {cold.fit_s / route.build_s:.0f}× | "
            f"{100 * route.test:.2f} / {100 * cold.test:.2f} |"
        )
    return "\n".join(lines) + "\n"


def render(out: Path, works: list[Path]) -> None:
    missing = [work for work in works if not (work / "rows.csv").is_file()]
    if missing or not works:
        raise SystemExit(f"{missing[0] if missing else 'no WORK folder'}: no rows.csv to render (measure first)")
    rows = pd.concat([pd.read_csv(work / "rows.csv") for work in works], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    curves = curves_in_order(rows)
    curves.insert(2, "curve", [curve_label(method, lr) for method, lr in zip(curves["method"], curves["lr"])])
    route = rows[rows["method"] == ROUTE]
    levels = pd.DataFrame({"network": route["network"], "pair": route["pair"], "label": ROUTE, "test": route["test"]})
    write_budget(out, curves.drop(columns=["order", "network_order"]), levels)
    write_text_atomic(out / "cost.md", cost_table(rows))
    print((out / "budget.md").read_text() + "\n" + (out / "cost.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render", type=Path, help="join the WORK folders' rows into this report folder")
    parser.add_argument("works", nargs="*", type=Path, help="with --render: the WORK folders")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--arch", default="onehidden")
    parser.add_argument("--options", type=json.loads, default={"width": 1000})
    parser.add_argument("--epochs", type=int, default=20, help="the endpoints' epochs (the endpoint schedule)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--points", type=int, default=21, help="evaluated points per leg")
    parser.add_argument("--wa-samples", type=int, default=10000, help="the route's fits' training samples")
    parser.add_argument("--curves", type=lambda text: text.split(","), default=list(CURVES), help="curve methods")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="the cold curves' initial learning rate")
    parser.add_argument("--aligned-lr", type=float, default=TrainConfig.lr, help="the aligned curves' one")
    parser.add_argument(
        "--budgets", type=lambda text: [int(e) for e in text.split(",")], default=list(BUDGETS), help="epochs"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("results/fitting-budget"))
    args = parser.parse_args()
    if args.render:
        render(args.render, args.works)
    else:
        measure(args)


if __name__ == "__main__":
    main()
