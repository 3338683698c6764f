"""Where a tracked run's inputs came from: the runs that wrote its input files, its dataset, the code
(git commit), the workflow config and the workflow invocation it belongs to.

A run that writes a file tags it with the file's SHA-256 (`output_sha256`); a run that reads files
looks those hashes up and tags the producing runs' IDs (`input.<argument>`), so the MLflow UI leads
from a path to the matching, curve or connector it used and on to the networks it connects. The
workflow starts one parent run per invocation (`start_workflow_run`, from Snakemake's `onstart`) and
hands its ID to every job through the environment; jobs nest their runs under it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lowloss.tracking import views

ENV_PARENT_RUN = "LOWLOSS_MLFLOW_PARENT_RUN"
ENV_CONFIG_HASH = "LOWLOSS_CONFIG_HASH"
OUTPUT_TAG = "output_sha256"
INPUT_TAG_PREFIX = "input."
DIGEST_TAG_PREFIX = "input_sha256."
PARENT_TAG = "mlflow.parentRunId"
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # shown on the run's page by the MLflow UI
SOURCE_NAME_TAG = "mlflow.source.name"  # the UI's Source column
REPORT_COMMANDS = ("report", "ensemble-report")
REPORT_RUN_TAG = "report_run.{command}"
REPORT_ARTIFACTS = (".csv", ".md", ".tex")
"""The report's tables that the workflow's parent run holds (its HTML pages are in the report itself)."""
PARAM_BATCH = 100  # MLflow takes at most 100 params per call
NOT_INPUTS = {"out", "save_path"}
"""Path arguments that are written, not read (`out_*` too)."""
TRAINING_COMMANDS = {"train", "fit-curve", "fit-connector"}


def file_digest(path: Path) -> str:
    """SHA-256 of a file; for a weight file, the hash its sidecar already records (no second read)."""
    sidecar = path.with_suffix(".json")
    if path.suffix == ".safetensors" and sidecar.is_file():
        recorded = json.loads(sidecar.read_text()).get("sha256")
        if recorded:
            return recorded
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def input_files(args: argparse.Namespace) -> dict[str, list[Path]]:
    """The files a command read, by argument: every Path argument (or list of Paths) that is not an
    output and names an existing file."""
    found = {}
    for key, value in vars(args).items():
        if key in NOT_INPUTS or key.startswith("out_"):
            continue
        paths = value if isinstance(value, list) else [value]
        files = [path for path in paths if isinstance(path, Path) and path.is_file()]
        if files:
            found[key] = files
    return found


def output_tags(args: argparse.Namespace) -> dict[str, str]:
    """`output_sha256` of the command's main output (`--out`), by which later runs find this one."""
    out = getattr(args, "out", None)
    return {OUTPUT_TAG: file_digest(out)} if isinstance(out, Path) and out.is_file() else {}


def producing_runs(client, experiment_id: str, inputs: dict[str, list[Path]]) -> dict[str, list]:
    """Per input argument, the latest finished run of the experiment that wrote each file (files no run
    of this experiment wrote are left out)."""
    found: dict[str, object] = {}
    producers = {}
    for key, paths in inputs.items():
        runs = []
        for path in paths:
            digest = file_digest(path)
            if digest not in found:
                matches = client.search_runs(
                    [experiment_id],
                    f"tags.{OUTPUT_TAG} = '{digest}' and attributes.status = 'FINISHED'",
                    order_by=["attributes.start_time DESC"],
                    max_results=1,
                )
                found[digest] = matches[0] if matches else None
            if found[digest] is not None:
                runs.append(found[digest])
        if runs:
            producers[key] = runs
    return producers


def input_digest_tags(inputs: dict[str, list[Path]]) -> dict[str, str]:
    """`input_sha256.<argument>`: the digest of every input file (several, comma-separated), so that files no run
    made (the user's own checkpoints) are pinned too."""
    return {f"{DIGEST_TAG_PREFIX}{key}": ",".join(file_digest(path) for path in paths) for key, paths in inputs.items()}


def input_tags(producers: dict[str, list]) -> dict[str, str]:
    """`input.<argument>`: the run ID (several, comma-separated) that wrote each input."""
    return {
        INPUT_TAG_PREFIX + key: ",".join(dict.fromkeys(run.info.run_id for run in runs))
        for key, runs in producers.items()
    }


def inputs_markdown(experiment_id: str, producers: dict[str, list]) -> str:
    """The inputs as links to their runs, for the run's description (tags are not links in the UI)."""
    if not producers:
        return ""
    lines = ["**Inputs**, by the runs that made them:", ""]
    for key, runs in producers.items():
        links = ", ".join(
            f"[{run.info.run_name}]({views.run_link(experiment_id, run.info.run_id)})"
            for run in dict((run.info.run_id, run) for run in runs).values()
        )
        lines.append(f"- `{key}`: {links}")
    return "\n".join(lines) + "\n"


def provenance_tags() -> dict[str, str]:
    """The git commit of this code, the workflow config's hash and the parent run, where known."""
    tags = {}
    commit = git_commit()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    for env, tag in ((ENV_CONFIG_HASH, "config_hash"), (ENV_PARENT_RUN, PARENT_TAG)):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def git_commit(folder: Path = Path(__file__).resolve().parent) -> str | None:
    """HEAD of the git checkout holding this package (the workflow's own `src/`), None outside one."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def dataset_name(args: argparse.Namespace) -> str | None:
    """The command's data: its image folder (`--image-folder`), else its named dataset (None: it reads none)."""
    folder = getattr(args, "image_folder", None)
    return str(folder) if folder is not None else getattr(args, "dataset", None)


def dataset_input(args: argparse.Namespace):
    """The command's dataset as an MLflow dataset input (None for commands without one).

    The digest identifies the data's source: the bytes of scikit-learn's embedded digits file, the
    names and sizes of the files under torchvision's folder of the dataset or the user's image folder, the
    generator's name for the synthetic sets (which are fixed by a seed in `lowloss.training.data`).
    """
    name = dataset_name(args)
    if name is None:
        return None
    from mlflow.entities import Dataset, DatasetInput, InputTag

    if getattr(args, "image_folder", None) is not None:
        source_type, source, digest = "local", str(Path(name).resolve()), _listing_digest(Path(name))
    else:
        source_type, source, digest = _dataset_source(name, Path(getattr(args, "data_root", "data")))
    context = "training" if args.command in TRAINING_COMMANDS else "evaluation"
    return DatasetInput(
        Dataset(name=name, digest=digest[:16], source_type=source_type, source=source),
        tags=[InputTag("mlflow.data.context", context)],
    )


def _dataset_source(name: str, root: Path) -> tuple[str, str, str]:
    from lowloss.training.datasets import DATASETS, digits_file

    if name == "digits":
        embedded = digits_file()
        return "local", f"scikit-learn's embedded digits ({embedded})", file_digest(embedded)
    if name in DATASETS and DATASETS[name].folder is not None:
        folder = (root / DATASETS[name].folder).resolve()
        return "local", str(folder), _listing_digest(folder)
    return "code", f"lowloss.training.data: {name}, generated in memory", hashlib.sha256(name.encode()).hexdigest()


def config_params(config: dict, prefix: str = "") -> Iterator[tuple[str, str]]:
    """The workflow config as flat MLflow params: `experiments.digits-onehidden.train.epochs` = `30`; lists
    joined by commas."""
    from lowloss.tracking.outputs import METRIC_UNSAFE

    for key, value in config.items():
        name = prefix + METRIC_UNSAFE.sub("_", str(key))
        if isinstance(value, dict):
            yield from config_params(value, name + ".")
        else:
            yield name, ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _listing_digest(folder: Path) -> str:
    """SHA-256 of the names and sizes of the files under `folder` (of nothing when it is missing)."""
    folder = folder.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    listing = "\n".join(f"{p.relative_to(folder)} {p.stat().st_size}" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def start_workflow_run(experiment: str, uri: str, name: str, tags: dict[str, str], config: dict) -> str:
    """Create the parent run of one workflow invocation and return its ID (jobs nest under it): the config
    as params (and as config.json), the git commit, and the experiment's description and saved views."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from lowloss.tracking.store import NOTE_TAG, describe_experiment, experiment_id, quiet_mlflow, store_lock

    quiet_mlflow()
    own = {key: value for key, value in provenance_tags().items() if key != PARENT_TAG}
    params = [Param(key, value) for key, value in config_params(config)]
    note = f"Workflow invocation of config `{name}`: every job's run is nested below; the report's tables follow."
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exp_id = experiment_id(client, experiment, uri)
        describe_experiment(client, exp_id)  # also on experiments created by older versions
        run = client.create_run(
            exp_id,
            run_name=f"workflow · {name}",
            tags={
                "command": "snakemake",
                "rule": "workflow",
                SOURCE_NAME_TAG: "snakemake",
                NOTE_TAG: note,
                **own,
                **tags,
            },
        )
        for start in range(0, len(params), PARAM_BATCH):
            client.log_batch(run.info.run_id, params=params[start : start + PARAM_BATCH])
        client.log_dict(run.info.run_id, config, "config.json")
    return run.info.run_id


def end_workflow_run(uri: str, run_id: str, status: str, report_dir: str | os.PathLike | None = None) -> None:
    """Mark the workflow's parent run FINISHED or FAILED. After a finished run it also holds the report's
    tables (`report_dir`) as artifacts and in its description, with links to the runs that made them."""
    from mlflow.tracking import MlflowClient

    from lowloss.tracking.store import store_lock

    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        if status == "FINISHED" and report_dir is not None:
            _attach_report(client, client.get_run(run_id), Path(report_dir))
        client.set_terminated(run_id, status)


def _attach_report(client, parent, report_dir: Path) -> None:
    """The report's tables as the parent's artifacts, its description with links to the report runs of
    this config (the latest, which may be of an earlier invocation when nothing had changed)."""
    from lowloss.tracking.outputs import tables_markdown
    from lowloss.tracking.store import NOTE_TAG

    run_id, exp_id = parent.info.run_id, parent.info.experiment_id
    files = sorted(p for p in report_dir.glob("*") if p.suffix in REPORT_ARTIFACTS) if report_dir.is_dir() else []
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="report")
    links = []
    for command in REPORT_COMMANDS:
        query = f"tags.command = '{command}' and attributes.status = 'FINISHED'"
        if parent.data.tags.get("config_hash"):
            query += f" and tags.config_hash = '{parent.data.tags['config_hash']}'"
        found = client.search_runs([exp_id], query, order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            client.set_tag(run_id, REPORT_RUN_TAG.format(command=command), found[0].info.run_id)
            links.append(f"[{found[0].info.run_name}]({views.run_link(exp_id, found[0].info.run_id)})")
    parts = [
        parent.data.tags.get(NOTE_TAG, ""),
        f"**Report runs**: {', '.join(links)}." if links else "",
        f"Compare the methods: {views.views_markdown(exp_id)}.",
        tables_markdown(files),
    ]
    client.set_tag(run_id, NOTE_TAG, "\n\n".join(part for part in parts if part))
