# Stage 1: endpoint networks, one per seed (pairs and model set V alike).


rule train:
    """Train the endpoint of one seed; an interrupted job resumes from its checkpoint."""
    input:
        first_seed_model,
    output:
        weights="results/{exp}/models/seed{seed}.safetensors",
        sidecar="results/{exp}/models/seed{seed}.json",
    params:
        data=data_args,
        train=train_args,
        tags=tags,
    log:
        "logs/{exp}/train/seed{seed}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=train train {params.data} {params.train} "
        "--seed {wildcards.seed} --out {output.weights} --no-progress > {log} 2>&1"
