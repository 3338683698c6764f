# Stage 4: OT neuron matchings (paper §3.4), once per pair, shared by `ot` and `ot+wa`.


rule match:
    """Match the neurons of a pair's endpoints by optimal transport."""
    input:
        unpack(pair_models),
    output:
        weights="results/{exp}/matchings/{pair}.safetensors",
        sidecar="results/{exp}/matchings/{pair}.json",
    params:
        options=matching_args,
        tags=tags,
    log:
        "logs/{exp}/matchings/{pair}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=match match {input.a} {input.b} {params.options} "
        "--out {output.weights} > {log} 2>&1"
