# Stage 4: OT unit matchings (paper §3.4), once per pair and OT method (ot, ot+wa, ot+bfly): each matches
# what its method moves, and a route method's matching is fitted on the route's points (§4.1).


rule match:
    """Match the units of a pair's endpoints by optimal transport, as method `method` does."""
    input:
        unpack(pair_models),
    output:
        weights="results/{exp}/matchings/{method}/{pair}.safetensors",
        sidecar="results/{exp}/matchings/{method}/{pair}.json",
    params:
        data=data_args,
        options=matching_args,
        tags=tags,
    log:
        "logs/{exp}/matchings/{method}/{pair}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=match match {input.a} {input.b} --method {wildcards.method} "
        "{params.data} {params.options} --out {output.weights} --no-progress > {log} 2>&1"
