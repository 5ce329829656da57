# One resolved configuration file per run; every per-task stage of the run reads it.


localrules:
    run_config,


rule run_config:
    output:
        f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/config.yaml",
    log:
        f"{RESULTS}/logs/run_config/{{experiment}}/{{point}}/seed{{seed}}.log",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(500),
        runtime=attempt_scaled(5),
    params:
        config=run_config_json,
    shell:
        "sparsecl run-config --json {params.config:q} --out {output} > {log} 2>&1"
