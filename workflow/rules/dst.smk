# dst: one training job per task (see src/sparsecl/methods/dst.py). The job draws the task's
# mask, trains with topology updates every `update_frequency` steps, merges the chosen epoch
# into the shared network and writes the task's mask as its own file.


use rule train_baseline as train_dst with:
    wildcard_constraints:
        experiment=method_experiments("dst"),
    resources:
        gpu=GPUS,
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(240),
