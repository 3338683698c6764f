# Stage 2: the model set V (paper §3.3): the manifest of the models the learned connectors fit on.


rule model_set:
    """Collect the models trained from model_set_seeds into V's manifest, at the top of the experiment's
    folder: a manifest may only name files under its own folder, and the members are in models/."""
    input:
        model_set_models,
    output:
        "results/{exp}/V.json",
    params:
        tags=tags,
    log:
        "logs/{exp}/model_set/V.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=model_set model-set {input} --out {output} > {log} 2>&1"
