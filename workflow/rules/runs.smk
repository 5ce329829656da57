# One resolved configuration file per run; a single-stage method's jobs read it.
#
# What reruns. Snakemake reruns a job when its params, code or input files change, and config.yaml
# is rewritten whenever any setting of the run changes. The jobs of a method whose plan names its
# stage kinds (sparsecl.plans: `Plan.stage_keys`; multistep, the tickets methods) read
# results/runs/<run>/stage_configs/<kind>.yaml instead: the run's settings with `method_args` cut
# to the keys that kind of stage reads (`Plan.stage_run`). `stage_config` writes it from its
# params, as run_config does, so it changes only when those settings do: a new multistep `ratio`
# rewrites sst and sst_msl's configs, a new tickets_bu `deacc` the imp and regrow rounds', and
# neither reruns a training stage before them.


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
