# multistep: helpers of workflow/rules/multistep.smk (stage inputs, teachers, which evaluation
# stands for each step), kept apart from its rules.

from sparsecl.plans import multistep as MS  # noqa: E402


def multistep_file(run, step, stage, name):
    return run_path(run, f"task{step}", stage, name)


def multistep_inputs(stage):
    """Input function of `stage`: its stage config, the data, its predecessor's model and masks, its teachers."""

    def inputs(wildcards):
        run, step = run_of(wildcards), int(wildcards.task)
        steps = run.scenario.num_tasks
        if stage not in MS.stages_of_step(step, steps):
            raise WorkflowError(
                f"{run.run_id}: stage {stage} does not run at step {step}"
            )
        files = stage_inputs(wildcards, stage)
        before = MS.predecessor(stage, step, steps)
        if before:
            files["prev_model"] = multistep_file(run, *before, "model.pt")
            files["prev_masks"] = multistep_file(run, *before, "masks.pt")
        msl = run.method_args.get("msl_teachers", "all")
        for name, (j, final) in MS.teachers(stage, step, steps, msl).items():
            files[name] = multistep_file(run, j, final, "model.pt")
        return files

    return inputs


def multistep_prev_args(wildcards, input):
    if "prev_model" not in input.keys():
        return ""
    return f"--prev-model {input.prev_model} --prev-masks {input.prev_masks}"


def multistep_teacher_args(wildcards, input):
    names = [name for name in input.keys() if name.startswith("teacher")]
    return " ".join(f"--input {name}={input[name]}" for name in names)


def multistep_resume(stage):
    return lambda wildcards: (
        f"{RESULTS}/resume/{run_of(wildcards).run_id}/task{wildcards.task}/{stage}.pt"
    )


def multistep_eval_inputs(wildcards):
    """A stage's model and stage config; masks: each earlier step's final stage, then this stage."""
    run, step, stage = run_of(wildcards), int(wildcards.task), wildcards.stage
    files = stage_inputs(wildcards, stage)
    files["model"] = multistep_file(run, step, stage, "model.pt")
    steps = run.scenario.num_tasks
    files["masks"] = [
        multistep_file(run, j, MS.final_stage(j, steps), "masks.pt")
        for j in range(step)
    ] + [multistep_file(run, step, stage, "masks.pt")]
    return files


def multistep_stage_evals(run):
    """Every stage's evaluation: the summary waits for them, so `all` builds them."""
    steps = run.scenario.num_tasks
    return [
        multistep_file(run, step, stage, "eval.parquet")
        for step in range(steps)
        for stage in MS.stages_of_step(step, steps)
    ]


FINAL_EVALS["multistep"] = lambda run, step: multistep_file(
    run, step, MS.final_stage(step, run.scenario.num_tasks), "eval.parquet"
)
RUN_EXTRAS["multistep"] = multistep_stage_evals
