# multistep: multi-step sparsity training on accumulating data (src/sparsecl/methods/multistep.py,
# docs/methods/multistep.md). One rule per stage of the paper's procedure, each reading the files
# of the stage before it:
#
#   step 0, chunk 0:  multistep_train -> multistep_sst
#   step k, chunk k:  multistep_aod (teacher: step k-1's final model) -> multistep_sst_msl
#                     (teachers: the final models of the earlier steps); the last step ends after aod
#   every stage:      multistep_evaluate, top-1 on the whole test set
#
# Files: results/runs/<run>/task<k>/<stage>/{model.pt, masks.pt, train_log.parquet, eval.parquet};
# the run's summary takes each step's last stage.
#
# Each stage job reads its stage config, results/runs/<run>/stage_configs/<stage>.yaml (runs.smk):
# the run's settings with `train` resolved for the stage (`method_args.stage_train`) and
# `method_args` cut down to the keys that stage depends on (sparsecl.plans.multistep.STAGE_KEYS),
# so a new `ratio` reruns sst and everything after it, never train.


include: "multistep_common.smk"


# (1) plain training on chunk 0.
rule multistep_train:
    input:
        unpack(multistep_inputs("train")),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train/train_log.parquet",
    log:
        f"{RESULTS}/logs/multistep_train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/multistep_train/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("multistep"),
        task="0",
    group:
        RUN_GROUP
    conda:
        "../../envs/sparsecl.yaml"
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(240),
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="train",
        prev=multistep_prev_args,
        teachers=multistep_teacher_args,
        resume=multistep_resume("train"),
        data_dir=subpath(input.meta, parent=True),
    shell:
        "sparsecl train --config {input.config} --config-hash {params.config_hash} --data-dir {params.data_dir}"
        " --scenario {input.scenario} --task {wildcards.task} --stage {params.stage}"
        " {params.prev} {params.teachers}"
        " --out-model {output.model} --out-masks {output.masks} --out-log {output.train_log}"
        " --resume {params.resume} --device {params.device} --threads {threads} >> {log} 2>&1"


# (2) selective sparsity training on chunk 0, from (1): writes S, the unimportant channels.
use rule multistep_train as multistep_sst with:
    input:
        unpack(multistep_inputs("sst")),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst/train_log.parquet",
        channels=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst/channels.parquet",
    log:
        f"{RESULTS}/logs/multistep_sst/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/multistep_sst/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.tsv"
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="sst",
        prev=multistep_prev_args,
        teachers=multistep_teacher_args,
        resume=multistep_resume("sst"),
        data_dir=subpath(input.meta, parent=True),


# (3), (5), (7) adaptive online distillation on chunk k, from the previous step's final model:
# re-initialise its S, distil from it.
use rule multistep_train as multistep_aod with:
    input:
        unpack(multistep_inputs("aod")),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/aod/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/aod/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/aod/train_log.parquet",
    log:
        f"{RESULTS}/logs/multistep_aod/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/multistep_aod/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("multistep"),
        task=r"[1-9]\d*",
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="aod",
        prev=multistep_prev_args,
        teachers=multistep_teacher_args,
        resume=multistep_resume("aod"),
        data_dir=subpath(input.meta, parent=True),


# (4), (6) sparsity training with the multi-step loss on chunk k, from (3) or (5): a new S.
use rule multistep_train as multistep_sst_msl with:
    input:
        unpack(multistep_inputs("sst_msl")),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst_msl/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst_msl/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst_msl/train_log.parquet",
        channels=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/sst_msl/channels.parquet",
    log:
        f"{RESULTS}/logs/multistep_sst_msl/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/multistep_sst_msl/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("multistep"),
        task=r"[1-9]\d*",
    params:
        code=train_code,
        config_hash=config_file_hash,
        device=config["device"],
        stage="sst_msl",
        prev=multistep_prev_args,
        teachers=multistep_teacher_args,
        resume=multistep_resume("sst_msl"),
        data_dir=subpath(input.meta, parent=True),


# Every stage: top-1 on the whole test set.
rule multistep_evaluate:
    input:
        unpack(multistep_eval_inputs),
    output:
        f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}/eval.parquet",
    log:
        f"{RESULTS}/logs/multistep_evaluate/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/multistep_evaluate/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}.tsv"
    wildcard_constraints:
        experiment=method_experiments("multistep"),
        stage="|".join(MS.STAGES),
    group:
        RUN_GROUP
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
