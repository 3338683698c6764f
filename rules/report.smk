# Stage 7: the paper's Tables 1 and 2 (worst accuracy along the path, mean ± std over pairs) and figures.


rule report:
    """Tabulate and plot every path table of the run."""
    input:
        paths=report_paths,
    output:
        report_outputs(),
    params:
        out_dir=output_folder,
    log:
        f"logs/report/{config['name']}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss --mlflow-tag rule=report report {input.paths} --out-dir {params.out_dir} > {log} 2>&1"
