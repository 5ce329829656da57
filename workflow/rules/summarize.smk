# Summarize a run into its accuracy matrix, from the evaluation of the stage that stands for each task.


localrules:
    summarize,


rule summarize:
    input:  # named, not unpacked: an eval file may wait for a checkpoint
        config=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/config.yaml",
        evals=lambda wildcards: summarize_inputs(wildcards)["evals"],
        extras=lambda wildcards: summarize_inputs(wildcards)["extras"],
    output:
        metrics=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/metrics.parquet",
        matrix=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/accuracy_matrix.csv",
        curves=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/curves.parquet",
    log:
        f"{RESULTS}/logs/summarize/{{experiment}}/{{point}}/seed{{seed}}.log",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(1000),
        runtime=attempt_scaled(10),
    params:
        code=SUMMARY_CODE,
        config_hash=config_file_hash,
    shell:
        "sparsecl summarize --config {input.config} --config-hash {params.config_hash} $(printf -- '--eval %s ' {input.evals})"
        " --out-metrics {output.metrics} --out-matrix {output.matrix} --out-curves {output.curves}"
        " > {log} 2>&1"
