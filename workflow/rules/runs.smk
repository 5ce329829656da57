# One resolved configuration file per run; the jobs of a plan that names its stage kinds
# (`Plan.stage_keys`) read results/runs/<run>/stage_configs/<kind>.yaml instead: the run's settings
# with `method_args` cut to the keys that kind reads. Each is rewritten only when what it holds
# changes, so a changed argument reruns exactly the stages that read it (and what follows them).


localrules:
    run_config,
    stage_config,


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


rule stage_config:
    output:
        f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/stage_configs/{{stage}}.yaml",
    log:
        f"{RESULTS}/logs/stage_config/{{experiment}}/{{point}}/seed{{seed}}/{{stage}}.log",
    wildcard_constraints:
        experiment=stage_config_experiments(),
        stage=r"[a-z_]+",
    conda:
        "../../envs/sparsecl.yaml"
    resources:
        mem_mb=attempt_scaled(500),
        runtime=attempt_scaled(5),
    params:
        config=stage_config_json,
    shell:
        "sparsecl run-config --json {params.config:q} --out {output} > {log} 2>&1"
