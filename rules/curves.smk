# Stage 5: the Garipov et al. (2018) baseline curves, trained per pair and curve type.


rule fit_curve:
    """Train a polychain or Bezier curve with `points` control points between a pair's endpoints."""
    input:
        unpack(pair_models),
    output:
        weights="results/{exp}/curves/{curve}-{points}/{pair}.safetensors",
        sidecar="results/{exp}/curves/{curve}-{points}/{pair}.json",
    params:
        data=data_args,
        options=curve_args,
        tags=tags,
    log:
        "logs/{exp}/curves/{curve}-{points}/{pair}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=fit_curve fit-curve {input.a} {input.b} --curve {wildcards.curve} "
        "--points {wildcards.points} {params.data} {params.options} --out {output.weights} --no-progress "
        "> {log} 2>&1"
