# Stage 8: WA-ensembles (paper §6, Fig. 7) of an experiment's models: Ind and every WA(n), for every
# ensemble size, and the report's ensembles table and figures.


rule ensemble:
    """Ensemble the first {size} models of the experiment's ensemble seeds: Ind (`ind`) or WA(n) (`wa<n>`)."""
    input:
        ensemble_models,
    output:
        weights="results/{exp}/ensembles/{ensemble}/size{size}.safetensors",
        sidecar="results/{exp}/ensembles/{ensemble}/size{size}.json",
    params:
        data=data_args,
        options=ensemble_args,
        tags=tags,
    log:
        "logs/{exp}/ensembles/{ensemble}/size{size}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=ensemble ensemble {input} {params.data} {params.options} "
        "--out {output.weights} > {log} 2>&1"


rule ensemble_report:
    """The ensembles table, Fig. 7 and accuracy against inference cost, for every experiment with `ensembles`."""
    input:
        ensemble_files,
    output:
        report_results(ensemble_report_outputs()),
    params:
        out_dir=output_folder,
        tags=ensemble_report_tags,
    log:
        f"logs/report/{config['name']}-ensembles.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} ensemble-report {input} --out-dir {params.out_dir} "
        "> {log} 2>&1"
