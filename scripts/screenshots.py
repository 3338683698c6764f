"""Screenshots of a run's HTML report and of its MLflow runs table, taken in a real (headless) Chromium.

    python scripts/screenshots.py --report results/report.html --ui http://127.0.0.1:5055 --out docs/images

Needs Playwright from PyPI and a Chromium binary (Debian's `chromium`, at /usr/bin/chromium; Playwright's
own browser download is not used), and an MLflow UI serving the run's store (`mlflow ui --port 5055
--backend-store-uri sqlite:///results/mlflow.db`). Each PNG is reduced to 256 colours so that it stays small.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.tracking import views
from lowloss.tracking.store import DEFAULT_URI

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 860}
REPORT_SHOTS = {  # file: (result, its `file` label in the report, or None for the list of results)
    "report-results.png": (None, None),
    "report-table1.png": ("Table 1", "HTML table"),
    "report-paths.png": ("Accuracy along the path", "figure (SVG)"),
}
MLFLOW_SHOTS = {"mlflow-methods.png": "lowloss-methods", "mlflow-paths.png": "lowloss-paths"}
SETTLE_MS = 4000  # the report's React app and iframes, MLflow's first queries


def small_png(path: Path) -> None:
    """Rewrite a screenshot with a 256-colour palette (text and flat colours survive it)."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def report_shots(browser, report: Path, out: Path) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(report.resolve().as_uri())
    page.wait_for_timeout(SETTLE_MS)
    page.get_by_text("Results", exact=True).first.click()
    for name, (result, kind) in REPORT_SHOTS.items():
        if result is not None:
            row = page.locator("tr").filter(has_text=result).filter(has_text=kind).first
            row.locator("a").first.click()
        page.wait_for_timeout(SETTLE_MS)
        page.screenshot(path=out / name)
    page.close()


def mlflow_shots(browser, ui: str, experiment_id: str, out: Path) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    for name, view in MLFLOW_SHOTS.items():
        page.goto(f"{ui}/{views.runs_link(experiment_id, view)}")
        page.wait_for_selector(".ag-row", timeout=120_000)
        page.wait_for_timeout(SETTLE_MS)
        assistant = page.get_by_role("button", name="Close")  # MLflow's assistant panel, not ours to show
        if assistant.count():
            assistant.first.click()
            page.wait_for_timeout(1000)
        page.screenshot(path=out / name)
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("results/report.html"))
    parser.add_argument("--ui", default="http://127.0.0.1:5055", help="address of the running MLflow UI")
    parser.add_argument("--store", default=DEFAULT_URI, help="the store the UI serves (to find the experiment)")
    parser.add_argument("--experiment", default="lowloss-default")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    experiment_id = MlflowClient(args.store).get_experiment_by_name(args.experiment).experiment_id
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        report_shots(browser, args.report, args.out)
        mlflow_shots(browser, args.ui.rstrip("/"), experiment_id, args.out)
        browser.close()
    for name in [*REPORT_SHOTS, *MLFLOW_SHOTS]:
        small_png(args.out / name)
        print(args.out / name)


if __name__ == "__main__":
    main()
