"""Each method's plan as a specification: its stages per task, what each reads and writes, what it
depends on and which stages decide what follows; its arguments typed once and checked while the
workflow plans, so that a mistake stops `snakemake -n` in one line naming the key."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import pytest

from sparsecl.errors import ConfigError
from sparsecl.experiments import load_schema, plan_runs
from sparsecl.plans import PLANS, STANDING, TRAINED, Ref, Stage, plan_of
from sparsecl.plans.base import NoArgs

from .workflow_helpers import ROOT, snakemake, write_config

SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
TICKETS_NET = {"backbone": "preact_resnet18_tickets", "backbone_args": {"width": 4}}
EXPERIMENTS = {
    "finetune": {},
    "joint": {},
    "dst": {},
    "focil": {},
    "packnet": {},
    "multistep": {"scenario": {"kind": "data", "num_tasks": 4, "chunks": [1, 1, 1, 1]}},
    "tickets_cil": {**TICKETS_NET, "scenario": {"num_tasks": 3, "classes_per_task": 2, "exemplars_per_class": 5}},
    "tickets_td": {
        **TICKETS_NET,
        "scenario": {"num_tasks": 2, "classes_per_task": 2, "exemplars_per_class": 5},
        "method_args": {"prune_schedule": [1, 2]},
    },
    "tickets_bu": {
        **TICKETS_NET,
        "scenario": {"num_tasks": 3, "classes_per_task": 2, "exemplars_per_class": 5, "validation_fraction": 0.2},
    },
}


def config_of(method: str, **changes) -> dict:
    experiment = {
        "method": method,
        "dataset": "digits",
        "scenario": {"num_tasks": 3, "classes_per_task": 2},
        **copy.deepcopy(EXPERIMENTS[method]),
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            experiment[key] = {**experiment.get(key, {}), **value}
        else:
            experiment[key] = value
    return {"seeds": [0], "experiments": {"x": experiment}}


def run_of(method: str, **changes):
    return plan_runs(config_of(method, **changes), SCHEMA)[0].run


def undecided(task: int, stage: Stage) -> dict:
    raise LookupError(f"task {task} {stage.name} has not decided yet")


def decisions(table: dict[tuple[int, str], dict]):
    return lambda task, stage: table[(task, stage.name)]


def names(plan, run, task, decide=undecided) -> list[str]:
    return [stage.name for stage in plan.stages(run, task, decide)]


def test_plans_load_without_torch_so_the_workflow_can_plan():
    code = "import sys, sparsecl.plans, sparsecl.experiments; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_every_method_of_the_schema_and_of_the_training_code_has_a_plan():
    from sparsecl.methods import METHODS

    schema_methods = SCHEMA["$defs"]["experiment"]["properties"]["method"]["enum"]
    assert sorted(schema_methods) == PLANS.names() == METHODS.names()


@pytest.mark.parametrize("method", PLANS.names())
def test_the_schema_names_each_argument_of_the_dataclass_with_its_default(method):
    args = plan_of(method).args
    schema = SCHEMA["$defs"]["args_none" if args is NoArgs else f"args_{method}"]
    properties = schema.get("properties", {})
    assert set(properties) == {f.name for f in dataclasses.fields(args)}
    defaults = args()
    for name, spec in properties.items():
        default = getattr(defaults, name)
        assert spec["default"] == (list(default) if isinstance(default, tuple) else default), name


@pytest.mark.parametrize("method", ["finetune", "joint", "focil", "dst"])
def test_a_one_stage_method_trains_and_evaluates_each_task_in_one_job_from_the_previous_task(method):
    plan, run = plan_of(method), run_of(method)
    first, third = (list(plan.stages(run, task, undecided)) for task in (0, 2))
    assert [s.name for s in first] == [s.name for s in third] == ["train"]
    assert first[0].reads == {}
    assert third[0].reads == {"prev_model": Ref(1, "train"), "prev_masks": Ref(1, "train", "masks.pt")}
    extra = ("topology.parquet",) if method == "dst" else ()
    assert third[0].writes == (*TRAINED, "eval.parquet", *extra)
    assert not third[0].deciding and third[0].keys is None  # it reads every method argument
    assert plan.path(2, "train", "model.pt") == "task2/model.pt"
    assert plan.standing(run, 2, undecided) == "train"


def test_multistep_runs_train_and_sst_then_aod_and_sst_msl_per_chunk_and_aod_alone_on_the_last():
    plan, run = plan_of("multistep"), run_of("multistep")
    assert [names(plan, run, step) for step in range(4)] == [["train", "sst"], *[["aod", "sst_msl"]] * 2, ["aod"]]
    aod, sst_msl = plan.stages(run, 2, undecided)
    assert aod.reads == {
        "prev_model": Ref(1, "sst_msl"),
        "prev_masks": Ref(1, "sst_msl", "masks.pt"),
        "teacher": Ref(1, "sst_msl"),
    }
    assert sst_msl.reads == {
        "prev_model": Ref(2, "aod"),
        "prev_masks": Ref(2, "aod", "masks.pt"),
        "teacher0": Ref(0, "sst"),
        "teacher1": Ref(1, "sst_msl"),
    }
    assert sst_msl.writes == (*TRAINED, "channels.parquet") and aod.writes == TRAINED
    assert plan.path(2, "aod", "model.pt") == "task2/aod/model.pt"
    assert plan.evaluated(run, 0, undecided) == ["train", "sst"]
    assert [plan.standing(run, step, undecided) for step in range(4)] == ["sst", "sst_msl", "sst_msl", "aod"]


def test_multistep_stages_depend_only_on_the_arguments_they_read():
    plan, run = plan_of("multistep"), run_of("multistep", method_args={"ratio": 0.3, "reinit_gamma": 0.1})
    train, sst = plan.stages(run, 0, undecided)
    aod, _ = plan.stages(run, 1, undecided)
    assert plan.stage_args(run, train) == {}
    assert plan.stage_args(run, sst)["ratio"] == 0.3 and "reinit_gamma" not in plan.stage_args(run, sst)
    assert plan.stage_args(run, aod)["reinit_gamma"] == 0.1 and "ratio" not in plan.stage_args(run, aod)


def test_tickets_cil_retrieves_unlabeled_images_with_the_previous_model_then_teaches_densely():
    plan, run = plan_of("tickets_cil"), run_of("tickets_cil")
    assert names(plan, run, 0) == ["train"] and names(plan, run, 1) == ["retrieve", "train"]
    retrieve, train = plan.stages(run, 2, undecided)
    assert retrieve.reads == {"prev_model": Ref(1, "train"), "prev_masks": Ref(1, "train", "masks.pt")}
    assert retrieve.writes == (*TRAINED, "unlabeled.pt") and retrieve.needs == ("unlabeled_pool",)
    assert train.reads == {**retrieve.reads, "unlabeled": Ref(2, "retrieve", "unlabeled.pt")}
    assert plan.path(2, "train", "model.pt") == "task2/train/model.pt"
    held_out = run_of("tickets_cil", method_args={"unlabeled_source": "held_out_classes"})
    assert all(stage.needs == () for stage in plan.stages(held_out, 2, undecided))


def test_tickets_td_prunes_the_scheduled_rounds_after_each_task_and_retrains_the_last_ticket():
    plan, run = plan_of("tickets_td"), run_of("tickets_td")  # prune_schedule [1, 2], rewind zero
    assert names(plan, run, 0) == ["train", "prune1"]
    assert names(plan, run, 1) == ["retrieve", "train", "prune1", "prune2", "final"]
    train0, prune = plan.stages(run, 0, undecided)
    assert train0.writes == (*TRAINED, "last.pt", "init.pt") and prune.reads["prev_model"] == Ref(0, "train")
    _, train, prune1, prune2, final = plan.stages(run, 1, undecided)
    ticket = {"prev_model": Ref(0, STANDING), "prev_masks": Ref(0, STANDING, "masks.pt")}  # task 0's prune1
    unlabeled = {"unlabeled": Ref(1, "retrieve", "unlabeled.pt")}
    assert train.reads == {**ticket, "rewind": Ref(0, "train", "init.pt"), **unlabeled}
    assert train.writes == (*TRAINED, "last.pt")
    assert prune1.reads == {"prev_model": Ref(1, "train"), "prev_masks": Ref(1, "train", "masks.pt"), **unlabeled}
    assert prune2.reads == {"prev_model": Ref(1, "prune1"), "prev_masks": Ref(1, "prune1", "masks.pt")}  # not retrained
    assert final.reads["prev_model"] == Ref(1, "prune2") and final.reads["rewind"] == Ref(0, "train", "init.pt")
    assert [plan.standing(run, t, undecided) for t in (0, 1)] == ["prune1", "final"]
    assert not any(stage.deciding for t in (0, 1) for stage in plan.stages(run, t, undecided))


def test_faithful_tickets_td_prunes_from_the_last_epoch_and_ranks_the_best_one():
    plan = plan_of("tickets_td")
    run = run_of("tickets_td", protocol="faithful", method_args={"rewind": "best"})
    _, train, prune1, *_ = plan.stages(run, 1, undecided)
    assert prune1.reads["prev_model"] == Ref(1, "train", "last.pt") and prune1.reads["ranked"] == Ref(1, "train")
    assert train.reads["rewind"] == Ref(0, "train")


def test_tickets_bu_rounds_are_deciding_stages_that_appear_as_their_decisions_come_in():
    plan, run = plan_of("tickets_bu"), run_of("tickets_bu")
    assert plan.stage(run, 0, "imp1", undecided).deciding  # known before anything has decided
    with pytest.raises(LookupError):
        names(plan, run, 0)  # how many rounds follow imp1 is imp1's to decide
    imp = decisions({(0, "imp1"): {"stop": False, "kept": 1}, (0, "imp2"): {"stop": True, "kept": 1}})
    assert names(plan, run, 0, imp) == ["train", "imp1", "imp2"]
    assert plan.stage(run, 0, "imp2", imp).reads["prev_model"] == Ref(0, "imp1")
    assert plan.standing(run, 0, imp) == "imp1"  # the round kept, not the last one run
    assert plan.stage(run, 0, "imp1", imp).writes == (*TRAINED, "decision.json")


def test_a_later_bu_task_trains_the_ticket_so_far_and_regrows_only_when_it_falls_behind():
    plan, run = plan_of("tickets_bu"), run_of("tickets_bu")
    ticket = plan.stage(run, 1, "ticket", undecided)
    assert ticket.deciding
    assert ticket.reads["prev_masks"] == Ref(0, STANDING, "masks.pt")  # whichever round task 0 kept
    assert ticket.reads["dense"] == Ref(1, "train") and ticket.reads["prev_model"] == Ref(0, "train")
    kept = decisions({(1, "ticket"): {"regrow": False}})
    assert names(plan, run, 1, kept) == ["retrieve", "train", "ticket"] and plan.standing(run, 1, kept) == "ticket"
    regrown = decisions(
        {
            (1, "ticket"): {"regrow": True},
            (1, "regrow1"): {"stop": False, "kept": 1},
            (1, "regrow2"): {"stop": True, "kept": 2},
        }
    )
    assert names(plan, run, 1, regrown)[-2:] == ["regrow1", "regrow2"]
    regrow1 = plan.stage(run, 1, "regrow1", regrown)
    assert regrow1.reads["prev_model"] == Ref(1, "train") and regrow1.reads["prev_masks"] == Ref(
        1, "ticket", "masks.pt"
    )
    assert plan.standing(run, 1, regrown) == "regrow2"
    none_kept = decisions({(1, "ticket"): {"regrow": True}, (1, "regrow1"): {"stop": True, "kept": 0}})
    assert plan.standing(run, 1, none_kept) == "ticket"


def test_a_bottom_up_stopping_argument_is_no_dependency_of_the_dense_stages():
    plan, run = plan_of("tickets_bu"), run_of("tickets_bu", method_args={"deacc": 5.0})
    retrieve, train, ticket = plan.stages(run, 1, decisions({(1, "ticket"): {"regrow": False}}))
    assert "deacc" not in plan.stage_args(run, retrieve) and "deacc" not in plan.stage_args(run, train)
    assert "deacc" not in plan.stage_args(run, ticket)  # it decides by accept_decay alone
    imp1 = plan.stage(run, 0, "imp1", decisions({(0, "imp1"): {"stop": True, "kept": 1}}))
    assert plan.stage_args(run, imp1)["deacc"] == 5.0
    assert plan.stage_run(run, "imp").method_args["deacc"] == 5.0
    assert "deacc" not in plan.stage_run(run, "train").method_args


@pytest.mark.parametrize("method", ["multistep", "tickets_cil", "tickets_td", "tickets_bu", "packnet"])
def test_each_stage_kind_reads_a_config_cut_to_its_keys_that_its_job_accepts(method):
    plan, run = plan_of(method), run_of(method)  # tickets_td: two tasks, not the default schedule's five

    def decide(task: int, stage: Stage) -> dict:  # every round of bottom-up's loops runs once
        return {"stop": True, "kept": 1, "regrow": True}

    stages = [stage for task in range(run.scenario.num_tasks) for stage in plan.stages(run, task, decide)]
    for stage in stages:
        assert stage.keys == plan.stage_keys[stage.kind], stage.name
        stage_run = plan.stage_run(run, stage.kind)
        assert set(stage_run.method_args) <= set(stage.keys)
        plan.args.of(stage_run)  # the job checks what it reads and fills the rest with defaults
    with pytest.raises(ConfigError, match="--stage: .*has stages .*got 'nonsense'"):
        plan.stage_run(run, "nonsense")


# One rule across keys per method (what the schema alone cannot say), and its one line.
CROSS_FIELD = [
    ("finetune", {"method_args": {"density": 0.5}}, "experiments.x.method_args.density: unknown key"),
    ("joint", {"method_args": {"density": 0.5}}, "experiments.x.method_args.density: unknown key"),
    ("dst", {"method_args": {"growth": "momentum"}, "train": {"optimizer": "sgd", "momentum": 0.0}},
     "experiments.x.method_args.growth: momentum growth needs Adam or SGD with train.momentum > 0"),
    ("dst", {"train": {"weight_decay": 0.001}}, "experiments.x.train.weight_decay: must be 0 for dst with isolation"),
    ("focil", {"method_args": {"search": "fixed"}, "scenario": {"kind": "data", "num_tasks": 2, "chunks": [1, 1]}},
     "experiments.x.scenario.kind"),
    ("packnet", {"scenario": {"kind": "data", "num_tasks": 2, "chunks": [1, 1]}}, "experiments.x.scenario.kind"),
    ("multistep", {"method_args": {"ratio": 0.6, "layer_cap": 0.5}},
     "experiments.x.method_args.layer_cap: expected in [ratio, 1] = [0.6, 1], got 0.5"),
    ("multistep", {"method_args": {"msl_alpha": [1.0]}},
     "experiments.x.method_args.msl_alpha: the multi-step loss needs a weight for steps 0..1, got [1.0]"),
    ("tickets_cil", {"scenario": {"kind": "data", "num_tasks": 2, "chunks": [1, 1]}}, "experiments.x.scenario.kind"),
    ("tickets_td", {"method_args": {"prune_schedule": [1, 1, 1]}},
     "experiments.x.method_args.prune_schedule: expected 2 prune counts >= 1 (one per task), got [1, 1, 1]"),
    ("tickets_bu", {"scenario": {"validation_fraction": 0.0}},
     "experiments.x.scenario.validation_fraction: tickets_bu's stopping rules read a validation split"),
]  # fmt: skip


@pytest.mark.parametrize(
    "method, changes, message", CROSS_FIELD, ids=[f"{c[0]}-{i}" for i, c in enumerate(CROSS_FIELD)]
)
def test_a_broken_rule_of_a_method_stops_planning_in_one_line_naming_the_key(method, changes, message):
    with pytest.raises(ConfigError) as err:
        plan_runs(config_of(method, **changes), SCHEMA)
    assert "\n" not in str(err.value) and str(err.value).startswith(message), str(err.value)


def test_the_rules_of_the_plans_agree_with_the_names_the_training_code_accepts():
    from sparsecl.methods.focil_routing import SCORES
    from sparsecl.plans import dst, focil
    from sparsecl.sparse.dst import GROWTH_ALIASES, GROWTH_MODES
    from sparsecl.sparse.masks import DENSITY_INITS

    assert set(dst.GROWTHS) == set(GROWTH_MODES) | set(GROWTH_ALIASES)
    assert set(dst.DENSITY_INITS) == set(DENSITY_INITS)
    assert set(focil.SELECTION_SCORES) == set(SCORES)


@pytest.mark.slow
def test_a_dry_run_stops_on_a_cross_field_mistake_in_one_line(tmp_path):
    config = config_of("dst", method_args={"growth": "momentum"}, train={"optimizer": "sgd", "momentum": 0.0})
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "all", check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1
    assert lines[-1] == (
        "config error: experiments.x.method_args.growth: momentum growth needs Adam or SGD with train.momentum > 0"
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()
