# Every method's jobs, read off its plan (src/sparsecl/plans/): one rule per stage shape, named
# <method>_<stage kind>, whose jobs read what the plan's stage reads (sparsecl.layout): files under
# results/runs/<run>/task<t>/ (one-stage plans) or task<t>/<stage>/. A deciding stage is a
# checkpoint; a stage that does not write eval.parquet is evaluated by `evaluate`. Training logs
# are appended to: a job resumed after a kill keeps the epochs it had logged.

for _shape in STAGE_RULES:
    _settings = stage_rule_settings(_shape)
    if _shape.deciding:

        checkpoint:
            name:
                _shape.name
            input:
                unpack(_settings["inputs"]),
            output:
                **_settings["outputs"],
            log:
                _settings["log"],
            benchmark:
                _settings["benchmark"]
            wildcard_constraints:
                **_settings["constraints"],
            group:
                RUN_GROUP
            conda:
                "../../envs/sparsecl.yaml"
            threads: 1
            resources:
                **_settings["resources"],
            params:
                **_settings["params"],
            shell:
                STAGE_SHELL

    else:

        rule:
            name:
                _shape.name
            input:
                unpack(_settings["inputs"]),
            output:
                **_settings["outputs"],
            log:
                _settings["log"],
            benchmark:
                _settings["benchmark"]
            wildcard_constraints:
                **_settings["constraints"],
            group:
                RUN_GROUP
            conda:
                "../../envs/sparsecl.yaml"
            threads: 1
            resources:
                **_settings["resources"],
            params:
                **_settings["params"],
            shell:
                STAGE_SHELL


# The evaluation of a stage that does not evaluate itself: top-1 on every task seen so far.
rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}/eval.parquet",
    log:
        f"{RESULTS}/logs/evaluate/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/{{stage}}.tsv"
    wildcard_constraints:
        experiment=experiments_of(*EVALUATED_METHODS),
        stage=EVALUATED_STAGES,
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
