# The generic training rule: the dense reference points finetune (forgetting lower bound) and
# joint (upper bound), and every method without rules of its own (common.smk, `OWN_RULES`).
# A task's job trains it, then evaluates the saved model on every seen task in the same process
# (eval.parquet): no second start, model or data load per task, and half the jobs to plan.
# Training logs are appended to: a job resumed after a kill keeps the epochs it had logged.


rule train_baseline:
    input:
        unpack(train_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train_log.parquet",
        evaluation=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/eval.parquet",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.tsv"
    wildcard_constraints:
        experiment=single_stage_experiments(),
    group:
        RUN_GROUP
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(120),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        task_files=task_file_args,
    shell:
        "sparsecl train --config {input.config} --config-hash {params.config_hash} --scenario {input.scenario} --task {wildcards.task}"
        " {params.task_files} --out-model {output.model} --out-masks {output.masks}"
        " --out-log {output.train_log} --out-eval {output.evaluation}"
        " --device {params.device} --threads {threads} >> {log} 2>&1"
