# Evaluate each task's model on every seen task; summarize a run into its accuracy matrix.


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        "results/runs/{experiment}/{point}/seed{seed}/task{task}/eval.parquet",
    log:
        "results/logs/evaluate/{experiment}/{point}/seed{seed}/task{task}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}/{point}/seed{seed}/task{task}.tsv"
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
        device=config["device"],
        data_dir=subpath(input.meta, parent=True),
    shell:
        "sparsecl evaluate --config {input.config} --data-dir {params.data_dir}"
        " --scenario {input.scenario} --task {wildcards.task} --model {input.model}"
        " $(printf -- '--masks %s ' {input.masks}) --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"


localrules:
    summarize,


rule summarize:
    input:  # named, not unpacked: an eval file may wait for a checkpoint (e.g. tickets_bu)
        config="results/runs/{experiment}/{point}/seed{seed}/config.yaml",
        evals=lambda wildcards: summarize_inputs(wildcards)["evals"],
        extras=lambda wildcards: summarize_inputs(wildcards)["extras"],
    output:
        metrics="results/runs/{experiment}/{point}/seed{seed}/metrics.parquet",
        matrix="results/runs/{experiment}/{point}/seed{seed}/accuracy_matrix.csv",
        curves="results/runs/{experiment}/{point}/seed{seed}/curves.parquet",
    log:
        "results/logs/summarize/{experiment}/{point}/seed{seed}.log",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(1000),
        runtime=attempt_scaled(10),
    params:
        code=SUMMARY_CODE,
    shell:
        "sparsecl summarize --config {input.config} $(printf -- '--eval %s ' {input.evals})"
        " --out-metrics {output.metrics} --out-matrix {output.matrix} --out-curves {output.curves}"
        " > {log} 2>&1"
