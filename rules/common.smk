# Config validation, the pair and method tables, wildcard constraints and every input function.
# Rules refer to these functions by name; no rule holds logic of its own.

import hashlib
import json
import os
import sys
from pathlib import Path
from shlex import quote

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # this workflow's lowloss (its method table imports no torch)
from lowloss.methods.registry import CURVES, ROUTE_METHODS, WA_METHODS, get_method  # noqa: E402
from lowloss.errors import LowlossError  # noqa: E402
from lowloss.nets.architectures import ARCHITECTURES  # noqa: E402
from lowloss.nets.references import parse_reference, possible_topologies  # noqa: E402
from lowloss.nets.topology import ONE_HIDDEN  # noqa: E402
from lowloss.results.budget import BUDGET_FILES  # noqa: E402
from lowloss.results.figures import FIGURE_SUFFIXES  # noqa: E402
from lowloss.results.tables import figure_stem, table_files  # noqa: E402
from lowloss.training.datasets import DATASETS  # noqa: E402

SCHEMA = Path(workflow.basedir) / "schemas" / "config.schema.yaml"
SRC = Path(workflow.basedir) / "src"

# Where the fitted files a method reads (`lowloss methods`: needs/takes) are made, relative to
# results/{exp}/; the registry says which method reads which. A new method is one line in the registry.
INPUT_FILES = {
    "connector": "connectors/{method}/fit{fit}.safetensors",
    "curve": "curves/{method}/{pair}{budget}.safetensors",  # {budget}: "" or ".epochs<E>" (curves.budget)
    "matching": "matchings/{method}/{pair}.safetensors",
}


def check_config(config):
    """Validate `config` and fill in defaults; stop before any job with a message naming the key.

    snakemake's own validation message buries the key in a dump of the schema, so the first error is
    reported here as `config: <key path>: <problem>`; the cross-key rules follow.
    """
    with open(SCHEMA) as handle:
        schema = yaml.safe_load(handle)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        raise WorkflowError(f"config: {key}: {error.message}")
    validate(config, str(SCHEMA))  # fills in the schema's defaults
    for name, exp in config["experiments"].items():
        key = f"config: experiments.{name}"
        if "checkpoints" in exp:
            check_checkpoints(key, exp)
        for method in methods(name):
            try:
                found = get_method(method)
            except LowlossError as error:
                raise WorkflowError(f"{key}: {error}; `lowloss methods` lists them") from None
            if "arch" in exp and not found.applies_to_architecture(exp["arch"]):
                raise WorkflowError(f"{key}: method {method!r} applies to {found.applies_to}, "
                                    f"not to architecture {exp['arch']!r}")
            if "model" in exp and not any(map(found.applies, possible_topologies(exp["model"]))):
                raise WorkflowError(f"{key}: method {method!r} applies to {found.applies_to}, "
                                    f"and model {exp['model']!r} is never one")
        if exp["connect"]["bn_batches"] is not None and not (exp.get("arch", "resnet20") == "resnet20"
                                                             and exp["arch_options"].get("norm", "batch") == "batch"):
            raise WorkflowError(f"{key}.connect.bn_batches: {exp['arch']} {exp['arch_options']} has no BatchNorm "
                                f"layers (leave it null)")
        seen = set(exp["model_set_seeds"])
        for a, b in exp["pairs"]:
            if a == b:
                raise WorkflowError(f"{key}.pairs: [{a}, {b}] connects a model with itself")
            if {a, b} & seen:
                raise WorkflowError(f"{key}.pairs: seed {sorted({a, b} & seen)[0]} is also in model_set_seeds "
                                    f"(evaluation pairs must be endpoints outside the model set V)")
        learned = [m for m in methods(name) if "connector" in get_method(m).inputs]
        if learned and len(seen) < 2:
            raise WorkflowError(f"{key}.model_set_seeds: {', '.join(learned)} need a model set V of at least "
                                f"two seeds, got {len(seen)}")
        check_ensembles(key, exp)


def check_checkpoints(key, exp):
    """The model a reference, the checkpoints files with numbers as keys (YAML may give them as text), every
    seed of the experiment one of them, and a normalisation of whole (mean, deviation) pairs."""
    try:
        parse_reference(exp["model"])
    except LowlossError as error:
        raise WorkflowError(f"{key}.model: {error}") from None
    exp["checkpoints"] = {int(number): path for number, path in exp["checkpoints"].items()}
    for number, path in exp["checkpoints"].items():
        if not os.path.isfile(path):
            raise WorkflowError(f"{key}.checkpoints.{number}: {path}: file not found")
    settings = exp.get("ensembles") or {"seeds": []}
    for field, seeds in (("pairs", [seed for pair in exp["pairs"] for seed in pair]),
                         ("model_set_seeds", exp["model_set_seeds"]), ("ensembles.seeds", settings["seeds"])):
        missing = [seed for seed in seeds if seed not in exp["checkpoints"]]
        if missing:
            raise WorkflowError(f"{key}.{field}: {missing[0]} is not a key of checkpoints "
                                f"({', '.join(map(str, exp['checkpoints']))})")
    if len(exp.get("normalize", [])) % 2:
        raise WorkflowError(f"{key}.normalize: {exp['normalize']}: expected MEAN, STD or C means then C deviations")


def check_ensembles(key, exp):
    """Ensemble sizes within the seeds given, WA(n) within a built-in architecture's layers (another network's
    job checks its own)."""
    settings = exp.get("ensembles")
    if settings is None:
        return
    too_large = [size for size in settings["sizes"] or [] if size > len(settings["seeds"])]
    if too_large:
        raise WorkflowError(f"{key}.ensembles.sizes: {too_large[0]} models, but only {len(settings['seeds'])} seeds")
    if "arch" not in exp:
        return
    layers = ARCHITECTURES[exp["arch"]].weight_layers
    wrong = [n for n in settings["wa_layers"] if not 1 <= n < layers]
    if wrong:
        raise WorkflowError(f"{key}.ensembles.wa_layers: WA({wrong[0]}) is out of range for {exp['arch']}, whose "
                            f"{layers} weight layers allow n from 1 to {layers - 1}")


def job_prefix(config):
    """What every job's shell runs first: bash strict mode, this workflow's lowloss on PYTHONPATH
    (rules call `python -m lowloss`, so a conda env from envs/lowloss.yaml needs no install of it),
    and the MLflow experiment, store and config hash the `lowloss` CLI logs to (the parent run of the
    invocation reaches the jobs through the environment, see `start_parent_run`).

    A shell prefix is not part of a rule's recorded code, so renaming the experiment, editing the
    config or moving the workflow does not rerun finished jobs. Braces are doubled: snakemake formats
    the prefix.
    """
    parts = ["set -euo pipefail", f"export PYTHONPATH={quote(str(SRC))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"]
    settings = config["mlflow"]
    if settings["enabled"]:
        parts.append(f"export LOWLOSS_MLFLOW_EXPERIMENT={quote(mlflow_experiment())}")
        parts.append(f"export LOWLOSS_CONFIG_HASH={config_hash()}")
        if settings["tracking_uri"]:
            parts.append(f"export MLFLOW_TRACKING_URI={quote(settings['tracking_uri'])}")
    else:
        parts.append("unset LOWLOSS_MLFLOW_EXPERIMENT")
    return "; ".join(parts) + "; "


# ---- tables -------------------------------------------------------------------------------------

def experiment(name):
    return config["experiments"][name]


def methods(name):
    """The methods evaluated on experiment `name`, in table order."""
    return experiment(name).get("methods") or config["methods"]


def pair_name(a, b):
    return f"{a}-{b}"


def pair_seeds(pair):
    a, b = pair.split("-")
    return int(a), int(b)


def pairs(name):
    return [pair_name(a, b) for a, b in experiment(name)["pairs"]]


def imported(name):
    """Whether experiment `name` connects the user's checkpoints (imported as model files) instead of training."""
    return "checkpoints" in experiment(name)


def architecture(name):
    """The built-in architecture or the model reference of experiment `name`."""
    return experiment(name).get("arch") or experiment(name)["model"]


def model_path(name, seed):
    """The model file of a seed: trained, or imported from the checkpoint of that key."""
    return f"results/{name}/models/{'checkpoint' if imported(name) else 'seed'}{seed}.safetensors"


def path_table(name, method, pair):
    return f"results/{name}/paths/{method}/{pair}.csv"


def report_dir():
    return f"results/report/{config['name']}"


def one_hidden(name):
    """Whether experiment `name` goes to Table 1 (a built-in one-hidden architecture) rather than Table 2."""
    arch = architecture(name)
    return arch in ARCHITECTURES and ARCHITECTURES[arch].topology == ONE_HIDDEN


def report_files():
    """What `lowloss report` writes for this config: Table 1 and/or Table 2, the worst points, the paths' cost,
    every experiment's path figure and chart of accuracy against cost, and the route figure of every deep
    experiment with route methods."""
    names = config["experiments"]
    tables = [table for table, present in (("table1", any(one_hidden(n) for n in names)),
                                           ("table2", not all(one_hidden(n) for n in names))) if present]
    files = [file for table in tables for file in table_files(table)]
    files.extend(["worst_points.csv", "worst_points.html", "cost.csv"])
    for name in names:
        files.extend(figure_files(figure_stem("paths", name)))
        files.extend(figure_files(figure_stem("cost", name)))
        if not one_hidden(name) and set(methods(name)) & set(ROUTE_METHODS):
            files.extend(figure_files(figure_stem("route", name)))
    if any(budget_curves(name) for name in names):
        files.extend([*BUDGET_FILES, *figure_files("budget")])
    return files


def figure_files(stem):
    return [f"{stem}{suffix}" for suffix in FIGURE_SUFFIXES]


# The report's outputs that `snakemake --report` shows (`make report`), in the order a reader wants them (the
# `#` label, by which the report sorts): file -> (#, label, caption file under report/); an experiment's
# figure (`paths-<experiment>.svg`) is listed by its figure's name (`paths.svg`). The tables come as a page to
# read (HTML) and as numbers (CSV). A file listed here is shown when the config's report has it.
REPORT_RESULTS = {
    "table1.html": ("1", "Table 1", "table1.rst"),
    "table1.csv": ("1", "Table 1", "table1.rst"),
    "table2.html": ("2", "Table 2", "table2.rst"),
    "table2.csv": ("2", "Table 2", "table2.rst"),
    "paths.svg": ("3", "Accuracy along the path", "paths.rst"),
    "route.svg": ("4", "The layer-wise route (Fig. 5)", "route.rst"),
    "worst_points.html": ("5", "Worst points", "worst_points.rst"),
    "worst_points.csv": ("5", "Worst points", "worst_points.rst"),
    "ensembles.html": ("6", "Ensembles", "ensembles.rst"),
    "ensembles.csv": ("6", "Ensembles", "ensembles.rst"),
    "fig7.svg": ("7", "Ensembles by number of models (Fig. 7)", "fig7.rst"),
    "ensembles_cost.svg": ("8", "Ensembles by inference cost", "ensembles_cost.rst"),
    "cost.svg": ("9", "Accuracy against cost", "cost.rst"),
    "cost.csv": ("9", "Accuracy against cost", "cost.rst"),
    "budget.html": ("9", "Worst accuracy against fitting budget", "budget.rst"),
    "budget.svg": ("9", "Worst test accuracy against fitting epochs", "budget.rst"),
    "budget.csv": ("9", "Worst accuracy against fitting budget", "budget.rst"),
}
REPORT_FORMATS = {".html": "HTML table", ".csv": "spreadsheet (CSV)", ".svg": "figure (SVG)"}
"""The report's `file` label: what clicking the result gives (the report sorts a table before its CSV)."""


# ---- input functions ----------------------------------------------------------------------------

def ensemble_experiments():
    return [name for name in config["experiments"] if experiment(name).get("ensembles")]


def ensemble_methods(name):
    """Ind, then WA(n) for every configured n: `ind`, `wa1`, `wa2` …"""
    return ["ind", *(f"wa{n}" for n in experiment(name)["ensembles"]["wa_layers"])]


def ensemble_sizes(name):
    """The configured ensemble sizes, or every size from 2 to the number of seeds."""
    settings = experiment(name)["ensembles"]
    return settings["sizes"] or list(range(2, len(settings["seeds"]) + 1))


def report_outputs(wildcards=None):
    return [f"{report_dir()}/{file}" for file in report_files()]


def report_results(paths):
    """`paths` (a rule's outputs), those in REPORT_RESULTS marked for the HTML report with their captions; an
    experiment's figure is labelled with the experiment."""
    marked = []
    for path in paths:
        stem, suffix = os.path.splitext(os.path.basename(path))
        figure, _, experiment = stem.partition("-")
        if figure + suffix in REPORT_RESULTS:
            order, label, caption = REPORT_RESULTS[figure + suffix]
            label = f"{label}: {experiment}" if experiment else label
            labels = {"#": order, "result": label, "file": REPORT_FORMATS[suffix]}
            path = report(path, caption=f"../report/{caption}", category="Results", labels=labels)
        marked.append(path)
    return marked


def ensemble_files(wildcards=None):
    """Every ensemble of the run: experiments in config order, methods as `ensemble_methods`, sizes ascending."""
    return [f"results/{name}/ensembles/{method}/size{size}.safetensors" for name in ensemble_experiments()
            for method in ensemble_methods(name) for size in sorted(ensemble_sizes(name))]


def ensemble_report_outputs(wildcards=None):
    """What `lowloss ensemble-report` writes, when some experiment has `ensembles`."""
    files = ["ensembles.csv", "ensembles.md", "ensembles.html", *figure_files("fig7"), *figure_files("ensembles_cost")]
    return [f"{report_dir()}/{file}" for file in files] if ensemble_experiments() else []


def output_folder(wildcards, output):
    """The folder of a rule's first output (for commands that take a folder)."""
    return os.path.dirname(output[0])


def learned(method):
    """Whether `method` reads a fitted connector (its paths are made once per connector fit)."""
    return "connector" in get_method(method).inputs


def fitted_path_table(name, method, pair, fit):
    return f"results/{name}/paths/{method}/{pair}.fit{fit}.csv"


def budget_path_table(name, method, pair, epochs):
    return f"results/{name}/paths/{method}/{pair}.epochs{epochs}.csv"


def budget_curves(name):
    """The curve methods experiment `name` also fits at every budget of `curves.budget` (none without budgets)."""
    if not experiment(name)["curves"]["budget"]:
        return []
    return [method for method in methods(name) if "curve" in get_method(method).inputs]


def report_paths(wildcards):
    """Every path table of the run, experiments in config order, methods in table order; a learned method's
    table once per connector fit; then every curve's path at every fitting budget."""
    paths = [fitted_path_table(name, method, pair, fit) if learned(method) else path_table(name, method, pair)
             for name in config["experiments"] for method in methods(name) for pair in pairs(name)
             for fit in (range(experiment(name)["connector_fits"]) if learned(method) else [None])]
    return paths + [budget_path_table(name, method, pair, epochs) for name in config["experiments"]
                    for method in budget_curves(name) for pair in pairs(name)
                    for epochs in experiment(name)["curves"]["budget"]]


def first_seed_model(wildcards):
    """Datasets that are downloaded or unpacked into data_root are prepared by one job first.

    Training jobs of other seeds wait for the experiment's first pair's first model, so no two jobs
    write the same dataset files at once; `ancient` keeps that model's age from retriggering them.
    """
    exp = experiment(wildcards.exp)
    first = exp["pairs"][0][0]
    if DATASETS[exp["dataset"]].embedded or int(wildcards.seed) == first:
        return []
    return [ancient(model_path(wildcards.exp, first))]


def import_inputs(wildcards):
    """The checkpoint of key `wildcards.seed`, and the model whose job prepares the dataset first (when one does)."""
    inputs = {"checkpoint": experiment(wildcards.exp)["checkpoints"][int(wildcards.seed)]}
    first = first_seed_model(wildcards)
    return {**inputs, "first": first} if first else inputs


def model_set_models(wildcards):
    return [model_path(wildcards.exp, seed) for seed in experiment(wildcards.exp)["model_set_seeds"]]


def pair_models(wildcards):
    a, b = pair_seeds(wildcards.pair)
    return {"a": model_path(wildcards.exp, a), "b": model_path(wildcards.exp, b)}


def ensemble_models(wildcards):
    """The first `size` models of the experiment's ensemble seeds, model 1 (the shared backbone) first."""
    seeds = experiment(wildcards.exp)["ensembles"]["seeds"][:int(wildcards.size)]
    return [model_path(wildcards.exp, seed) for seed in seeds]


def method_inputs(wildcards):
    """The fitted files (connector, curve, matching) that method `wildcards.method` reads for the pair (a
    connector: the one of fit `wildcards.fit`; a curve: the one fitted for `wildcards.epochs` on a budget path)."""
    method = get_method(wildcards.method)  # a +repair variant reads the files made for its method
    if learned(method.name) and "fit" not in wildcards.keys():
        raise WorkflowError(f"{wildcards.method}: a learned method's path table is <pair>.fit<k>.csv, one per fit")
    return {need: os.path.join("results", wildcards.exp, INPUT_FILES[need].format(
                method=method.base_name, pair=wildcards.pair, fit=wildcards.get("fit"),
                budget=f".epochs{wildcards.epochs}" if "epochs" in wildcards.keys() else ""))
            for need in method.inputs}


def connect_inputs(wildcards):
    """Both endpoints plus the files the method reads."""
    return {**pair_models(wildcards), **method_inputs(wildcards)}


# ---- command-line arguments (params) ------------------------------------------------------------

def flags(options):
    """{"t_uniform": True, "batch_size": 128} -> "--batch-size 128 --t-uniform"; None values are left out.

    Sorted, so reordering keys in a config file does not count as changed params (which reruns jobs).
    """
    parts = []
    for key, value in sorted(options.items()):
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif value is not None and value is not False:
            parts.append(f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def data_args(wildcards):
    """Dataset and device options shared by every command that reads data (with the input size and normalisation
    of a checkpoint experiment's model, which every job sees the data with)."""
    exp = experiment(wildcards.exp)
    parts = [f"--dataset {exp['dataset']} --data-root {exp['data_root']}"
             f"{' --download' if exp['download'] else ''} --device {config['device']}"]
    shaped = flags({key: exp.get(key) for key in ("input_size", "normalize")})
    return " ".join(parts + ([shaped] if shaped else []))


def import_args(wildcards):
    """The model a checkpoint is of: its reference, arguments (JSON values) and frozen modules."""
    exp = experiment(wildcards.exp)
    arguments = ",".join(f"{key}={json.dumps(value)}" for key, value in exp.get("model_args", {}).items())
    parts = [f"--model {quote(exp['model'])}", *([f"--model-args {quote(arguments)}"] if arguments else [])]
    return " ".join([*parts, *(f"--freeze {quote(module)}" for module in exp.get("freeze", []))])


def train_args(wildcards):
    exp = experiment(wildcards.exp)
    return f"--arch {exp['arch']} {flags(exp['arch_options'])} {flags(exp['train'])}"


def connector_args(wildcards):
    """The method's connector options; fit k is fitted with seed + k."""
    options = experiment(wildcards.exp)["connectors"].get(wildcards.method, {})
    return flags({**options, "seed": options.get("seed", 0) + int(wildcards.fit)})


def curve_args(wildcards):
    """The curve's training: an aligned curve's epochs are `aligned_epochs` (null: fit-curve's default for them),
    its learning rate `aligned_lr` (null: the curves' `lr`); a budget's fit (`wildcards.epochs`) runs that many."""
    settings = dict(experiment(wildcards.exp)["curves"])
    aligned_epochs, aligned_lr = settings.pop("aligned_epochs"), settings.pop("aligned_lr")
    del settings["budget"]
    if CURVES[wildcards.method].align is not None:
        settings["epochs"] = aligned_epochs
        settings["lr"] = settings["lr"] if aligned_lr is None else aligned_lr
    if "epochs" in wildcards.keys():
        settings["epochs"] = int(wildcards.epochs)
    return flags(settings)


def route_options(wildcards):
    """The route's fit (§4.1) for +wa and +bfly methods: its samples and the BatchNorm statistics its points carry
    (a matching records them too)."""
    if get_method(wildcards.method).base_name not in ROUTE_METHODS:
        return {}
    settings = experiment(wildcards.exp)["connect"]
    return {"wa_samples": settings["wa_samples"], "bn_batches": settings["bn_batches"]}


def matching_args(wildcards):
    return flags({**experiment(wildcards.exp)["matching"], **route_options(wildcards)})


def connect_args(wildcards):
    """Evaluation points and swap-leg screening, the route's options for +wa and +bfly methods, weight matching's
    budget of sweeps, and the method's fitted files."""
    settings = experiment(wildcards.exp)["connect"]
    method = get_method(wildcards.method)
    options = {"points": settings["points"], "bn_batches": settings["bn_batches"],
               "screen_swaps": settings["screen_swaps"], **route_options(wildcards), **method_inputs(wildcards)}
    if method.base_name in WA_METHODS:  # weight-adjusted methods, §3.5
        options["wa_breakpoints"] = settings["wa_breakpoints"]
    if method.repair:
        options["repair_batches"] = settings["repair_batches"]
    if "wm_sweeps" in method.options:
        options["wm_sweeps"] = settings["wm_sweeps"]
    return flags(options)


def ensemble_args(wildcards):
    """`--independent` for Ind, `--wa-layer N` for WA(N), and the adjustment's training samples."""
    method = {"independent": True} if wildcards.ensemble == "ind" else {"wa_layer": int(wildcards.ensemble[2:])}
    return flags({**method, "wa_samples": experiment(wildcards.exp)["ensembles"]["wa_samples"]})


def tags(wildcards):
    """MLflow tags of a job: experiment, dataset, architecture and its other wildcards (seed, pair, method …)."""
    exp = experiment(wildcards.exp)
    values = {"experiment": wildcards.exp, "dataset": exp["dataset"], "arch": architecture(wildcards.exp),
              **{key: value for key, value in wildcards.items() if key != "exp"}}
    return tag_flags(values)


def rule_tags(name):
    """The MLflow tags of a job of rule `name` or of its variant for a learned connector's fit (`<name>_fit`) or a
    fitting budget (`<name>_budget`), told apart by the wildcards of the file it makes."""
    def job_tags(wildcards):
        variants = [f"_{kind}" for kind, key in (("fit", "fit"), ("budget", "epochs")) if key in wildcards.keys()]
        return f"{tag_flags({'rule': name + (variants or [''])[0]})} {tags(wildcards)}"

    return job_tags


def report_tags(wildcards):
    """MLflow tags of the report job: every experiment and dataset of the run, comma-separated."""
    return summary_tags("report", list(config["experiments"]))


def ensemble_report_tags(wildcards):
    """MLflow tags of the ensembles' report job: the experiments with ensembles and their datasets."""
    return summary_tags("ensemble_report", ensemble_experiments())


def summary_tags(rule, names):
    datasets = dict.fromkeys(experiment(name)["dataset"] for name in names)
    return tag_flags({"rule": rule, "experiment": ",".join(names), "dataset": ",".join(datasets)})


def tag_flags(values):
    return " ".join(f"--mlflow-tag {key}={quote(str(value))}" for key, value in values.items())


# ---- MLflow: one parent run per invocation ------------------------------------------------------

def mlflow_experiment():
    """The config's experiment, else lowloss-<name> (never MLflow's own `Default`)."""
    return config["mlflow"]["experiment"] or f"lowloss-{config['name']}"


def config_hash():
    """Short hash of the validated config (defaults filled in): the `config_hash` tag of every run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def mlflow_uri():
    return config["mlflow"]["tracking_uri"] or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///results/mlflow.db"


def start_parent_run():
    """Open this invocation's parent run; jobs started from here inherit its ID and nest under it.

    Snakemake calls this only when jobs are about to run (not on dry runs, not inside cluster jobs).
    A tracking failure only warns, like every job's tracking.
    """
    if not config["mlflow"]["enabled"]:
        return
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # this workflow's lowloss, as in every job
    from lowloss.tracking.lineage import ENV_PARENT_RUN, start_workflow_run

    try:
        os.environ[ENV_PARENT_RUN] = start_workflow_run(mlflow_experiment(), mlflow_uri(), config["name"],
                                                        {"config_hash": config_hash()}, config)
    except Exception as exc:
        logger.warning(f"MLflow: no parent run for this invocation ({type(exc).__name__}: {exc})")


def end_parent_run(status):
    """Close the parent run opened by `start_parent_run` as FINISHED (holding the report's tables and links
    to its runs) or FAILED."""
    if not config["mlflow"]["enabled"]:
        return
    from lowloss.tracking.lineage import ENV_PARENT_RUN, end_workflow_run

    run_id = os.environ.pop(ENV_PARENT_RUN, None)
    if run_id:
        try:
            end_workflow_run(mlflow_uri(), run_id, status, report_dir())
        except Exception as exc:
            logger.warning(f"MLflow: parent run {run_id} not closed ({type(exc).__name__}: {exc})")


check_config(config)
shell.prefix(job_prefix(config))


onstart:
    start_parent_run()


onsuccess:
    end_parent_run("FINISHED")


onerror:
    end_parent_run("FAILED")


wildcard_constraints:
    exp=r"[a-z0-9][a-z0-9._-]*",
    seed=r"\d+",
    pair=r"\d+-\d+",
    fit=r"\d+",
    epochs=r"\d+",
    method=r"[a-z0-9][a-z0-9+-]*",
    ensemble=r"ind|wa\d+",
    size=r"\d+",
