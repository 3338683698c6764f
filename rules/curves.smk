# Stage 5: the Garipov et al. (2018) baseline curves, trained per pair and curve method (and once per fitting
# budget, curves.budget, for the report's table of worst accuracy against epochs).


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
        tags=rule_tags("fit_curve"),  # fit_curve, or fit_curve_budget for a fitting budget's fit
    log:
        "logs/{exp}/curves/{method}/{pair}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} fit-curve {input.a} {input.b} --method {wildcards.method} "
        "{params.data} {params.options} --out {output.weights} --no-progress > {log} 2>&1"


use rule fit_curve as fit_curve_budget with:
    output:
        weights="results/{exp}/curves/{method}/{pair}.epochs{epochs}.safetensors",
        sidecar="results/{exp}/curves/{method}/{pair}.epochs{epochs}.json",
    log:
        "logs/{exp}/curves/{method}/{pair}.epochs{epochs}.log",
