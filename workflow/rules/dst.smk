# dst: one training job per task (see src/sparsecl/methods/dst.py). The job draws the task's
# mask, trains with topology updates every `update_frequency` steps, merges the chosen epoch
# into the shared network, writes the task's mask as its own file and the topology trace
# (initial mask and every update, per layer) beside it.


use rule train_baseline as train_dst with:
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/model.pt",
        masks=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/masks.pt",
        train_log=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/train_log.parquet",
        evaluation=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/eval.parquet",
        topology=f"{RESULTS}/runs/{{experiment}}/{{point}}/seed{{seed}}/task{{task}}/topology.parquet",
    wildcard_constraints:
        experiment=method_experiments("dst"),
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(240),
