# Stage 1 of a checkpoint experiment: the user's checkpoints, each imported as a model file (instead of training).


rule import_checkpoint:
    """Import the user's checkpoint of key {seed} as a model file of the experiment's model, scored on the data."""
    input:
        unpack(import_inputs),
    output:
        weights="results/{exp}/models/checkpoint{seed}.safetensors",
        sidecar="results/{exp}/models/checkpoint{seed}.json",
    params:
        data=data_args,
        model=import_args,
        tags=tags,
    log:
        "logs/{exp}/import/checkpoint{seed}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} --mlflow-tag rule=import import {input.checkpoint} {params.model} "
        "{params.data} --out {output.weights} --no-progress > {log} 2>&1"
