# Stage 2: the model set V (paper §3.3): the manifest of the models the learned connectors fit on.


rule model_set:
    """Collect the models trained from model_set_seeds into V's manifest."""
    input:
        model_set_models,
    output:
        "results/{exp}/model_set/V.json",
    params:
        tags=tags,
    log:
        "logs/{exp}/model_set/V.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=model_set model-set {input} --out {output} > {log} 2>&1"
