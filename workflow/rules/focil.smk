# focil: one training job per task (see src/sparsecl/methods/focil.py). The job runs every
# search trial of its task: each trial is a single pass, and successive-halving pruning decides
# from the trials before it, so trials are sequential and too cheap to be jobs of their own.


use rule train_baseline as train_focil with:
    wildcard_constraints:
        experiment=method_experiments("focil"),
