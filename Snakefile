# lowloss workflow: train endpoints (or import the user's checkpoints) -> model set V -> connectors,
# matchings, curves -> every method on every pair -> report; ensembles of each experiment's models ->
# their report. Each rule is one `lowloss` command; see rules/ (one stage per file) and config.yaml
# (the default run). `make run` runs it with profiles/local; profiles/slurm targets Slurm.

from snakemake.utils import min_version

min_version("9.0")


# A config given with --configfile replaces config.yaml (it is not merged into it), so that a preset
# runs only its own experiments and methods.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/train.smk"
include: "rules/import.smk"
include: "rules/model_set.smk"
include: "rules/connectors.smk"
include: "rules/matchings.smk"
include: "rules/curves.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/ensembles.smk"


rule all:
    input:
        report_outputs,
        report_paths,  # targets themselves, so a deleted path table is made again
        ensemble_report_outputs,
