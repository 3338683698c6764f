# Stage 3: learned connectors ν (paper §3.3), connector_fits per learned method (seeds seed, seed + 1, …), each
# fitted once on V and used for every pair.


rule fit_connector:
    """Fit connector number `fit` of one learned method (realnvp-flow, iaf-flow, realnvp-bijection) on V."""
    input:
        "results/{exp}/V.json",
    output:
        weights="results/{exp}/connectors/{method}/fit{fit}.safetensors",
        sidecar="results/{exp}/connectors/{method}/fit{fit}.json",
    params:
        data=data_args,
        options=connector_args,
        tags=tags,
    log:
        "logs/{exp}/connectors/{method}/fit{fit}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=fit_connector fit-connector --method {wildcards.method} "
        "--model-set {input} {params.data} {params.options} --out {output.weights} --no-progress > {log} 2>&1"
