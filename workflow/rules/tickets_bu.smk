# tickets_bu: bottom-up lifelong pruning (src/sparsecl/methods/tickets_bu.py).
#
#   task<t>/train/           the dense reference (tickets_train_dense in tickets.smk), the teacher
#   task0/imp<r>/            IMP round r on task 0 (from imp<r-1>, round 0 = task0/train)
#   task<t>/ticket/          (t >= 1) task t-1's reference under the ticket so far, trained on task t
#   task<t>/regrow<r>/       (t >= 1) regrowth round r (round 1 from task t's reference)
#
# How many IMP and regrowth rounds run depends on accuracy, so those stages (and `ticket`, which
# decides whether to regrow) are Snakemake checkpoints: each writes decision.json, and the input
# functions in tickets_common.smk read it to ask for the next round only when the last one says
# so. Checkpoints rather than a fixed chain of rounds that turn into no-ops: no job is submitted
# for a round the stopping rule never reaches (up to 26 per loop with the paper's settings), and
# a dry run shows the DAG up to the first undecided round. The kept round of each task
# (bu_kept_stage) is that task's ticket: it is evaluated, and the next task's ticket starts from
# its mask.


checkpoint tickets_bu_imp:
    input:
        unpack(bu_imp_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/imp{{round}}/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/imp{{round}}/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/imp{{round}}/train_log.parquet",
        decision=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/imp{{round}}/decision.json",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/imp{{round}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/imp{{round}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_bu"),
        task="0",
        round=r"[1-9][0-9]*",
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(16000),
        runtime=attempt_scaled(240),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage=lambda wildcards: f"imp{wildcards.round}",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, f"imp{wildcards.round}"),
        data_dir=subpath(input.meta, parent=True),
    shell:
        TICKETS_SHELL


checkpoint tickets_bu_ticket:
    input:
        unpack(bu_ticket_inputs),
        prev_masks=bu_ticket_masks,
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/ticket/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/ticket/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/ticket/train_log.parquet",
        decision=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/ticket/decision.json",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/ticket.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/ticket.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_bu"),
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
        stage="ticket",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, "ticket"),
        data_dir=subpath(input.meta, parent=True),
    shell:
        TICKETS_SHELL


checkpoint tickets_bu_regrow:
    input:
        unpack(bu_regrow_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/regrow{{round}}/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/regrow{{round}}/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/regrow{{round}}/train_log.parquet",
        decision=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/regrow{{round}}/decision.json",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/regrow{{round}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/regrow{{round}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("tickets_bu"),
        task=r"[1-9][0-9]*",
        round=r"[1-9][0-9]*",
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(16000),
        runtime=attempt_scaled(240),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage=lambda wildcards: f"regrow{wildcards.round}",
        inputs=tickets_args,
        resume=lambda wildcards: tickets_resume(wildcards, f"regrow{wildcards.round}"),
        data_dir=subpath(input.meta, parent=True),
    shell:
        TICKETS_SHELL
