# Stage 5: the Garipov et al. (2018) baseline curves, trained per pair and curve method.


rule fit_curve:
    """Train the curve of a garipov-* method (polychain or Bezier, 3 or 5 points) between a pair's endpoints."""
    input:
        unpack(pair_models),
    output:
        weights="results/{exp}/curves/{method}/{pair}.safetensors",
        sidecar="results/{exp}/curves/{method}/{pair}.json",
    params:
        data=data_args,
        options=curve_args,
        tags=tags,
    log:
        "logs/{exp}/curves/{method}/{pair}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=fit_curve fit-curve {input.a} {input.b} --method {wildcards.method} "
        "{params.data} {params.options} --out {output.weights} --no-progress > {log} 2>&1"
