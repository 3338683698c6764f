# Stage 6: every configured method on every pair, evaluated along its path on train and test; a learned
# method once per connector fit (connect_fit), a curve once more per fitting budget (connect_budget).


rule connect:
    """Build one method's path between a pair's endpoints and write its accuracy/loss table."""
    input:
        unpack(connect_inputs),
    output:
        "results/{exp}/paths/{method}/{pair}.csv",
    params:
        data=data_args,
        options=connect_args,
        # a learned method's fits are connect_fit jobs, budget paths connect_budget (the rule tag tells them apart)
        tags=rule_tags("connect"),
    log:
        "logs/{exp}/paths/{method}/{pair}.log",
    conda:
        "../envs/lowloss.yaml"
    shell:
        "python -m lowloss {params.tags} connect {input.a} {input.b} --method {wildcards.method} "
        "{params.data} {params.options} --out {output} --no-progress > {log} 2>&1"


use rule connect as connect_fit with:
    output:
        "results/{exp}/paths/{method}/{pair}.fit{fit}.csv",
    log:
        "logs/{exp}/paths/{method}/{pair}.fit{fit}.log",


use rule connect as connect_budget with:
    output:
        "results/{exp}/paths/{method}/{pair}.epochs{epochs}.csv",
    log:
        "logs/{exp}/paths/{method}/{pair}.epochs{epochs}.log",
