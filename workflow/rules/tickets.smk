# Lifelong Tickets (src/sparsecl/methods/tickets*.py): what the three methods share, and tickets_cil.
#
# Every stage of a task is a job in results/runs/<run>/task<t>/<stage>/ with its own model.pt,
# masks.pt and train_log.parquet. This file holds the stages all three methods run (retrieve, the
# dense lottery-teaching `train` of tickets_cil and of tickets_bu's dense reference, evaluation);
# tickets_cil is nothing but these, so it has no file of its own. The pruning procedures are in
# tickets_td.smk and tickets_bu.smk.
#
#   task<t>/retrieve/unlabeled.pt   (t >= 1) retrieved unlabeled images, their frozen views and the
#                                   teacher logits of task t-1's `train` model
#   task<t>/train/                  lottery teaching of task t from task t-1's `train` model
#   task<t>/<stage>/eval.parquet    evaluation of one stage; TICKETS_FINAL[method](run, t) names the
#                                   stage that stands for task t (its masks file is the task's mask)
#
# Each job reads the config of its stage's kind (stage_configs/<kind>.yaml, runs.smk), whose
# method_args are the keys that kind reads (sparsecl.plans.tickets), so that a BU-only setting
# such as `deacc` reruns BU's rounds and not the dense training.


rule tickets_retrieve:
    input:
        unpack(tickets_retrieve_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/retrieve/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/retrieve/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/retrieve/train_log.parquet",
        unlabeled=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/retrieve/unlabeled.pt",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/retrieve.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/retrieve.tsv"
    wildcard_constraints:
        experiment=method_experiments(*TICKETS),
        task=r"[1-9][0-9]*",
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(16000),
        runtime=attempt_scaled(60),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="retrieve",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, "retrieve"),
        data_dir=subpath(input.meta, parent=True),
    shell:
        TICKETS_SHELL


# tickets_cil, and the dense reference of tickets_bu: lottery teaching of task t from task t-1.
use rule tickets_retrieve as tickets_train_dense with:
    input:
        unpack(tickets_dense_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/train_log.parquet",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_cil", "tickets_bu"),
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(16000),
        runtime=attempt_scaled(480),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="train",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, "train"),
        data_dir=subpath(input.meta, parent=True),


rule tickets_evaluate:
    input:
        unpack(tickets_eval_inputs),
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}/model.pt",
        masks=tickets_eval_masks,
    output:
        f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}/eval.parquet",
    log:
        f"{RESULTS}/logs/evaluate/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}.tsv"
    wildcard_constraints:
        experiment=method_experiments(*TICKETS),
        stage=r"train|ticket|final|(prune|imp|regrow)[1-9][0-9]*",
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(30),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        data_dir=subpath(input.meta, parent=True),
    shell:
        "sparsecl evaluate --config {input.config} --config-hash {params.config_hash} --data-dir {params.data_dir}"
        " --scenario {input.scenario} --task {wildcards.task} --stage {wildcards.stage}"
        " --model {input.model} $(printf -- '--masks %s ' {input.masks}) --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"
