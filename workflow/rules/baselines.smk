# Dense reference points: finetune (forgetting lower bound) and joint (upper bound).
# Training logs are appended to: a job resumed after a kill keeps the epochs it had logged.


rule train_baseline:
    input:
        unpack(train_inputs),
    output:
        model="results/runs/{experiment}/{point}/seed{seed}/task{task}/model.pt",
        masks="results/runs/{experiment}/{point}/seed{seed}/task{task}/masks.pt",
        train_log="results/runs/{experiment}/{point}/seed{seed}/task{task}/train_log.parquet",
    log:
        "results/logs/train/{experiment}/{point}/seed{seed}/task{task}.log",
    benchmark:
        "results/benchmarks/train/{experiment}/{point}/seed{seed}/task{task}.tsv"
    wildcard_constraints:
        experiment=method_experiments("finetune", "joint"),
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
        device=config["device"],
        prev=prev_task_args,
        resume=resume_file,
        data_dir=subpath(input.meta, parent=True),
    shell:
        "sparsecl train --config {input.config} --data-dir {params.data_dir}"
        " --scenario {input.scenario} --task {wildcards.task} {params.prev}"
        " --out-model {output.model} --out-masks {output.masks} --out-log {output.train_log}"
        " --resume {params.resume} --device {params.device} --threads {threads} >> {log} 2>&1"
