# Lifelong Tickets: the helper functions of tickets.smk (shared stages, tickets_cil), tickets_td.smk
# and tickets_bu.smk, which hold only rules. Paths are results/runs/<run>/task<t>/<stage>/.

TICKETS = ("tickets_cil", "tickets_td", "tickets_bu")
TICKETS_FINAL = {}  # method -> function(run, task) -> the stage evaluated after task t
TICKETS_SHELL = (
    "sparsecl train --config {input.config} --config-hash {params.config_hash} --data-dir {params.data_dir}"
    " --scenario {input.scenario} --task {wildcards.task} --stage {params.stage} {params.inputs}"
    " --out-model {output.model} --out-masks {output.masks} --out-log {output.train_log}"
    " --resume {params.resume} --device {params.device} --threads {threads} >> {log} 2>&1"
)
_STANDARD_INPUTS = ("config", "meta", "scenario", "prev_model", "prev_masks")


def tickets_file(run, task, stage, name):
    return run_path(run, f"task{task}", stage, name)


def tickets_prev(run, task, stage, model="model.pt"):
    """A stage's starting point (--prev-model/--prev-masks): the files of `stage` of `task`."""
    return {
        "prev_model": tickets_file(run, task, stage, model),
        "prev_masks": tickets_file(run, task, stage, "masks.pt"),
    }


def tickets_pool(run):
    """The unlabeled pool files, when the run retrieves from `data.unlabeled_pool`."""
    if run.method_args["unlabeled_source"] != "pool":
        return {}
    return unlabeled_pool(run.dataset)


def tickets_unlabeled(run, task):
    """What a training stage of task t >= 1 distils on: task t's retrieval (and the pool)."""
    if task == 0:
        return {}
    return {
        "unlabeled": tickets_file(run, task, "retrieve", "unlabeled.pt"),
        **tickets_pool(run),
    }


def tickets_test(run):
    """Faithful stopping rules read test accuracy, so only then is the test split an input."""
    if run.protocol != "faithful":
        return {}
    return {
        f"test_{kind}": f"{data_dir(run.dataset)}/test/{kind}.npy"
        for kind in ("images", "labels")
    }


def tickets_args(wildcards, input):
    """--prev-model/--prev-masks and one --input NAME=PATH per further named input."""
    args = []
    if "prev_model" in input.keys():
        args.append(f"--prev-model {input.prev_model} --prev-masks {input.prev_masks}")
    args += [
        f"--input {name}={path}"
        for name, path in input.items()
        if name not in _STANDARD_INPUTS
    ]
    return " ".join(args)


def tickets_resume(wildcards, stage):
    return (
        f"{RESULTS}/resume/{run_of(wildcards).run_id}/task{wildcards.task}/{stage}.pt"
    )


def tickets_final(run, task):
    return TICKETS_FINAL[run.method](run, task)


def tickets_final_eval(run, task):
    return tickets_file(run, task, tickets_final(run, task), "eval.parquet")


def tickets_retrieve_inputs(wildcards):
    run, task = run_of(wildcards), int(wildcards.task)
    return {
        **stage_inputs(wildcards, "retrieve"),
        **tickets_prev(run, task - 1, "train"),
        **tickets_pool(run),
    }


def tickets_dense_inputs(wildcards):
    run, task = run_of(wildcards), int(wildcards.task)
    inputs = stage_inputs(wildcards, "train")
    if task > 0:
        inputs |= tickets_prev(run, task - 1, "train") | tickets_unlabeled(run, task)
    return inputs


def tickets_eval_inputs(wildcards):
    """The evaluated stage's kind's config (its name less the round), the data and the scenario."""
    return stage_inputs(wildcards, wildcards.stage.rstrip("0123456789"))


def tickets_eval_masks(wildcards):
    """The masks of every earlier task's final stage, then the evaluated stage's own.

    A named input of its own (never unpacked): the final stages may wait for checkpoints.
    """
    run, task = run_of(wildcards), int(wildcards.task)
    masks = [
        tickets_file(run, t, tickets_final(run, t), "masks.pt") for t in range(task)
    ]
    return masks + [tickets_file(run, task, wildcards.stage, "masks.pt")]


TICKETS_FINAL["tickets_cil"] = lambda run, task: "train"
for _method in TICKETS:
    FINAL_EVALS[_method] = tickets_final_eval


# ---------------------------------------------------------------- tickets_td


def td_schedule(run):
    return run.method_args["prune_schedule"]


def td_final_stage(run, task):
    if task == run.scenario.num_tasks - 1:
        return "final"
    return f"prune{td_schedule(run)[task]}"


TICKETS_FINAL["tickets_td"] = td_final_stage


def td_ticket(run, task):
    """The ticket a task ends with: its last prune round."""
    return tickets_prev(run, task, f"prune{td_schedule(run)[task]}")


def td_rewind(run, task):
    """The weights the ticket's conv layers rewind to before training `task`."""
    mode = run.method_args["rewind"]
    if mode == "zero":
        return {"rewind": tickets_file(run, 0, "train", "init.pt")}
    if mode == "best":
        return {"rewind": tickets_file(run, task, "train", "model.pt")}
    return {}


def td_train_inputs(wildcards):
    run, task = run_of(wildcards), int(wildcards.task)
    inputs = stage_inputs(wildcards, "train")
    if task > 0:
        inputs |= td_ticket(run, task - 1) | td_rewind(run, task - 1)
        inputs |= tickets_unlabeled(run, task)
    return inputs


def td_prune_inputs(wildcards):
    run, task, round_ = run_of(wildcards), int(wildcards.task), int(wildcards.round)
    if round_ > td_schedule(run)[task]:
        raise WorkflowError(
            f"{run.run_id}: task {task} has {td_schedule(run)[task]} prune rounds"
        )
    if round_ == 1:
        start = "last.pt" if run.protocol == "faithful" else "model.pt"
        inputs = tickets_prev(run, task, "train", start)
        if (
            run.protocol == "faithful" and task > 0
        ):  # upstream ranks the best checkpoint's weights
            inputs["ranked"] = tickets_file(run, task, "train", "model.pt")
    else:
        inputs = tickets_prev(run, task, f"prune{round_ - 1}")
    if round_ < td_schedule(run)[task]:  # retrained
        inputs |= tickets_unlabeled(run, task)
    return stage_inputs(wildcards, "prune") | inputs


def td_final_inputs(wildcards):
    run, task = run_of(wildcards), int(wildcards.task)
    if task != run.scenario.num_tasks - 1:
        raise WorkflowError(f"{run.run_id}: only the last task has a final stage")
    inputs = (
        stage_inputs(wildcards, "final") | td_ticket(run, task) | td_rewind(run, task)
    )
    return inputs | tickets_unlabeled(run, task)


# ---------------------------------------------------------------- tickets_bu


def bu_decision(checkpoint, run, task, **wildcards):
    done = checkpoint.get(
        experiment=run.experiment,
        point=run.point,
        seed=str(run.seed),
        task=str(task),
        **wildcards,
    )
    return json.loads(Path(done.output.decision).read_text())


def bu_kept_round(checkpoint, run, task, kind, before):
    """Follow the rounds' decisions to the stage the loop keeps (`before` for round 0)."""
    round_ = 1
    while True:
        decision = bu_decision(checkpoint, run, task, round=str(round_))
        if decision["stop"]:
            return f"{kind}{decision['kept']}" if decision["kept"] else before
        round_ += 1


def bu_kept_stage(run, task):
    if task == 0:
        return bu_kept_round(checkpoints.tickets_bu_imp, run, 0, "imp", "train")
    if not bu_decision(checkpoints.tickets_bu_ticket, run, task)["regrow"]:
        return "ticket"
    return bu_kept_round(checkpoints.tickets_bu_regrow, run, task, "regrow", "ticket")


TICKETS_FINAL["tickets_bu"] = bu_kept_stage


def bu_imp_inputs(wildcards):
    run, round_ = run_of(wildcards), int(wildcards.round)
    start = tickets_prev(run, 0, "train" if round_ == 1 else f"imp{round_ - 1}")
    return stage_inputs(wildcards, "imp") | start | tickets_test(run)


def bu_ticket_inputs(wildcards):
    run, task = run_of(wildcards), int(wildcards.task)
    return {
        **stage_inputs(wildcards, "ticket"),
        "prev_model": tickets_file(run, task - 1, "train", "model.pt"),
        "dense": tickets_file(run, task, "train", "model.pt"),
        **tickets_unlabeled(run, task),
        **tickets_test(run),
    }


def bu_ticket_masks(wildcards):
    """The ticket so far: the masks of task t-1's kept stage (a named input: it waits for checkpoints)."""
    run, task = run_of(wildcards), int(wildcards.task)
    return tickets_file(run, task - 1, bu_kept_stage(run, task - 1), "masks.pt")


def bu_regrow_inputs(wildcards):
    run, task, round_ = run_of(wildcards), int(wildcards.task), int(wildcards.round)
    if round_ == 1:
        start = {
            "prev_model": tickets_file(run, task, "train", "model.pt"),
            "prev_masks": tickets_file(run, task, "ticket", "masks.pt"),
        }
    else:
        start = tickets_prev(run, task, f"regrow{round_ - 1}")
    return (
        stage_inputs(wildcards, "regrow")
        | start
        | tickets_unlabeled(run, task)
        | tickets_test(run)
    )
