# tickets_td: top-down lifelong pruning (src/sparsecl/methods/tickets_td.py). The number of
# rounds is fixed by the config (`prune_schedule`), so plain rules give the whole DAG up front:
#
#   task0/train/{model,last,init}.pt   dense task 0 from the seeded init (init.pt: its conv weights)
#   task<t>/train/{model,last}.pt      (t >= 1) task t under task t-1's ticket, conv weights rewound
#   task<t>/prune<r>/                  r = 1..n_t: prune 20% of the remaining conv weights, retrain if
#                                      r < n_t; prune<n_t> is task t's ticket (evaluated after task t)
#   task<T-1>/final/                   the last ticket rewound and retrained on the last task (evaluated)
#
# `faithful` continues from `train`'s last epoch (last.pt) and, for t >= 1, its prune1 ranks the
# best-validation weights (`ranked`: model.pt); `standard` prunes its best-validation model (model.pt).


rule tickets_td_train:
    input:
        unpack(td_train_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/train_log.parquet",
        last=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/last.pt",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_td"),
        task=r"[1-9][0-9]*",
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
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
    shell:
        TICKETS_SHELL


# Task 0 also saves the seeded init, the target of `rewind: zero`.
use rule tickets_td_train as tickets_td_train_first with:
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/train_log.parquet",
        last=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/last.pt",
        init=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/init.pt",
    wildcard_constraints:
        experiment=method_experiments("tickets_td"),
        task="0",


use rule tickets_td_train as tickets_td_prune with:
    input:
        unpack(td_prune_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/prune{{round}}/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/prune{{round}}/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/prune{{round}}/train_log.parquet",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/prune{{round}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/prune{{round}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_td"),
        round=r"[1-9][0-9]*",
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(16000),
        runtime=attempt_scaled(240),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage=lambda wildcards: f"prune{wildcards.round}",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, f"prune{wildcards.round}"),
        data_dir=subpath(input.meta, parent=True),


use rule tickets_td_train as tickets_td_final with:
    input:
        unpack(td_final_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/final/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/final/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/final/train_log.parquet",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/final.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/final.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_td"),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="final",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, "final"),
        data_dir=subpath(input.meta, parent=True),
