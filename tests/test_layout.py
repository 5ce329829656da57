"""How the workflow turns plans into rules and jobs: one rule per stage shape of a method, named
after its method and stage kind, a checkpoint where the stage decides what follows; each job's
inputs are the files its plan's stage reads, found where the producing stage writes them."""

from __future__ import annotations

import re

import pytest

from sparsecl.layout import Layout, evaluated_apart, job_args
from sparsecl.plans import plan_of, stage_rules

from .test_plans import decisions, run_of, undecided

LAYOUT = Layout("results", "resources", "other_cifar")


def stage_of(run, task: int, name: str, decide=undecided):
    return plan_of(run.method).stage(run, task, name, decide)


def rules_by_name(*methods: str) -> dict:
    return {rule.name: rule for rule in stage_rules(run_of(method) for method in methods)}


def test_a_one_stage_method_is_one_rule_whose_jobs_write_in_the_task_folder():
    rules = rules_by_name("finetune", "dst")
    assert sorted(rules) == ["dst_train", "finetune_train"]
    assert rules["dst_train"].job == "task{task}"
    assert rules["dst_train"].tasks == (0, 1, 2)
    assert set(rules["dst_train"].outputs) == {"model", "masks", "train_log", "eval", "topology"}
    assert not rules["dst_train"].deciding


def test_a_stage_kind_that_writes_other_files_at_some_tasks_is_a_rule_of_its_own():
    rules = rules_by_name("tickets_td")  # two tasks; task 0's train also saves the seeded init
    assert sorted(rules) == [
        "tickets_td_final", "tickets_td_prune", "tickets_td_retrieve", "tickets_td_train", "tickets_td_train_task0",
    ]  # fmt: skip
    assert "init" in rules["tickets_td_train_task0"].outputs and rules["tickets_td_train_task0"].tasks == (0,)
    assert "init" not in rules["tickets_td_train"].outputs and rules["tickets_td_train"].tasks == (1,)
    assert rules["tickets_td_prune"].job == "task{task}/prune{round}"
    assert rules["tickets_td_final"].tasks == (1,)


def test_the_rounds_of_bottom_up_tickets_are_checkpoints_and_the_rest_plain_rules():
    rules = rules_by_name("tickets_bu")
    assert {name for name, rule in rules.items() if rule.deciding} == {
        "tickets_bu_imp", "tickets_bu_ticket", "tickets_bu_regrow",
    }  # fmt: skip
    assert {name for name, rule in rules.items() if not rule.deciding} == {"tickets_bu_retrieve", "tickets_bu_train"}
    assert rules["tickets_bu_imp"].tasks == (0,) and rules["tickets_bu_regrow"].tasks == (1, 2)


def test_only_stages_that_do_not_evaluate_themselves_get_an_evaluation_job():
    methods, stages = evaluated_apart(stage_rules(run_of(m) for m in ("finetune", "multistep", "tickets_td")))
    assert methods == {"multistep", "tickets_td"}
    for name in ("sst_msl", "prune3", "final", "train"):
        assert re.fullmatch(stages, name), name
    for name in ("prune", "prune0", "eval"):
        assert not re.fullmatch(stages, name), name


def test_a_job_reads_the_files_its_stage_names_where_their_stages_write_them():
    run = run_of("multistep")
    stage = stage_of(run, 2, "sst_msl")
    inputs = LAYOUT.job_inputs(run, 2, stage, undecided)
    base = "results/runs/x/default/seed0"
    assert inputs["config"] == f"{base}/stage_configs/sst_msl.yaml"
    assert inputs["prev_model"] == f"{base}/task2/aod/model.pt"
    assert inputs["teacher0"] == f"{base}/task0/sst/model.pt"
    assert inputs["teacher1"] == f"{base}/task1/sst_msl/model.pt"
    assert inputs["scenario"].startswith("resources/scenarios/digits/")


def test_the_ticket_of_a_task_starts_from_the_mask_of_the_round_the_previous_task_kept():
    run = run_of("tickets_bu")
    decide = decisions({(0, "imp1"): {"stop": False}, (0, "imp2"): {"stop": True, "kept": 1}})
    ticket = stage_of(run, 1, "ticket", decide)
    inputs = LAYOUT.job_inputs(run, 1, ticket, decide)
    assert inputs["prev_masks"] == "results/runs/x/default/seed0/task0/imp1/masks.pt"
    assert inputs["pool"].endswith("/pool.npy")  # it distils on the unlabeled pool


def test_a_one_stage_job_evaluates_itself_after_reading_every_earlier_tasks_masks():
    run = run_of("finetune")
    stage = stage_of(run, 2, "train")
    inputs = LAYOUT.job_inputs(run, 2, stage, undecided)
    assert inputs["eval_masks"] == [f"results/runs/x/default/seed0/task{t}/masks.pt" for t in (0, 1)]
    args = job_args(inputs, "out/eval.parquet")
    assert args.startswith("--prev-model results/runs/x/default/seed0/task1/model.pt --prev-masks ")
    assert args.endswith(
        "--out-eval out/eval.parquet --eval-masks results/runs/x/default/seed0/task0/masks.pt"
        " --eval-masks results/runs/x/default/seed0/task1/masks.pt"
    )
    assert "--input" not in args


def test_the_summary_waits_for_every_evaluated_stage_and_takes_each_tasks_standing_one():
    run = run_of("multistep")
    files = LAYOUT.summary_inputs(run, undecided)
    assert [f.split("seed0/")[1] for f in files["evals"]] == [
        "task0/sst/eval.parquet", "task1/sst_msl/eval.parquet", "task2/sst_msl/eval.parquet", "task3/aod/eval.parquet",
    ]  # fmt: skip
    assert [f.split("seed0/")[1] for f in files["extras"]] == [
        "task0/train/eval.parquet", "task1/aod/eval.parquet", "task2/aod/eval.parquet",
    ]  # fmt: skip


def test_a_stage_need_the_workflow_does_not_know_is_refused():
    with pytest.raises(ValueError, match="needs 'telepathy'"):
        LAYOUT.needs(run_of("finetune"), "telepathy")
