# Stage 7: the paper's Tables 1 and 2 (worst accuracy along the path, mean ± std over pairs) and figures.
# The outputs in REPORT_RESULTS (rules/common.smk) are marked for `snakemake --report` (`make report`).


rule report:
    """Tabulate and plot every path table of the run."""
    input:
        paths=report_paths,
    output:
        report_results(report_outputs()),
    params:
        out_dir=output_folder,
        tags=report_tags,
    log:
        f"logs/report/{config['name']}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} report {input.paths} --out-dir {params.out_dir} > {log} 2>&1"
