"""`--config rehearse=true`: a config's rehearsal on synthetic data, apart from real results."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import yaml

from sparsecl.data.synth import CHECKSUMS
from sparsecl.errors import DataError
from sparsecl.experiments import load_schema, plan_ledger, plan_runs, validate
from sparsecl.rehearsal import MAX_TASKS, covering_indices, covering_points, rehearsal_config
from sparsecl.report import build_report
from sparsecl.roots import NOTICE

from .workflow_helpers import ROOT, planned_jobs, snakemake, write_config

SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
PAPERS = sorted((ROOT / "config/papers").glob("*.yaml"))
# The paper configurations CI rehearses end to end (benchmarks/README.md, "Rehearsals": times).
REHEARSED_IN_CI = ["multistep", "cl-with-dst", "lifelong-tickets", "focil"]


@pytest.mark.parametrize("lengths", [[], [2], [2, 4, 3], [3, 1, 2]])
def test_a_covering_set_holds_every_value_of_every_axis_in_max_length_points(lengths):
    product = list(itertools.product(*(range(n) for n in lengths)))
    chosen = [product[i] for i in covering_indices(lengths)]
    assert len(chosen) == max(lengths, default=1)
    for axis, n in enumerate(lengths):
        assert {point[axis] for point in chosen} == set(range(n))


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_a_rehearsal_keeps_methods_protocols_backbones_and_scenarios_and_shrinks_only_cost(path):
    real = validate(yaml.safe_load(path.read_text()), SCHEMA)
    rehearsal = rehearsal_config(copy.deepcopy(real), "resources/rehearsal")
    assert rehearsal["seeds"] == real["seeds"][:1]
    real_planned = plan_runs(real, SCHEMA)
    real_runs = {p.run.run_id: p.run for p in real_planned}
    planned = plan_runs(rehearsal, SCHEMA)
    kept = covering_points(rehearsal, planned)
    assert {p.run.experiment for p in kept} == set(real["experiments"])
    for p in kept:
        run, twin = p.run, real_runs[p.run.run_id]
        assert (run.method, run.protocol, run.backbone, run.backbone_args, run.dataset) == (
            twin.method, twin.protocol, twin.backbone, twin.backbone_args, twin.dataset,
        )  # fmt: skip
        sizes = {"validation_fraction", "exemplars_per_class"}  # shrunk, but present where the paper has them
        kept_as_is = sizes | {"num_tasks"}
        assert {k: v for k, v in vars(run.scenario).items() if k not in kept_as_is} == {
            k: v for k, v in vars(twin.scenario).items() if k not in kept_as_is
        }
        assert run.scenario.num_tasks == min(twin.scenario.num_tasks, MAX_TASKS)
        for key in sizes:
            assert bool(getattr(run.scenario, key)) == bool(getattr(twin.scenario, key))
        assert run.train.epochs == 1
        assert run.method_args.get("trials", 2) <= 2 and run.method_args.get("max_rounds", 2) <= 2
        assert run.method_args.get("retrain_epochs", 1) == 1
        if run.method.startswith("tickets"):
            assert run.method_args["unlabeled_per_exemplar"] == 1
    # every grid value runs at least once for each method on each dataset and backbone
    assert exercised(p.run for p in kept) == exercised(p.run for p in planned)
    # the ledger keeps a row for every reported entry, planned on the full grid
    assert len(plan_ledger(rehearsal, planned)) == len(plan_ledger(real, real_planned))
    for source, entry in rehearsal["data"]["sources"].items():
        assert entry["checksums"] == CHECKSUMS[source] and entry["path"].startswith("resources/rehearsal/synth/")


def test_only_focils_100_task_tiny_imagenet_is_cut_to_the_longest_other_scenario():
    cut = {}
    for path in PAPERS:
        real = validate(yaml.safe_load(path.read_text()), SCHEMA)
        rehearsal = rehearsal_config(copy.deepcopy(real), "resources/rehearsal")
        for name, experiment in real["experiments"].items():
            tasks = experiment["scenario"]["num_tasks"]
            if rehearsal["experiments"][name]["scenario"]["num_tasks"] != tasks:
                cut[path.stem, name] = tasks
            elif path.stem != "focil" or "tiny" not in name:
                assert tasks <= MAX_TASKS
    assert cut == {("focil", "readme_tiny_imagenet_100task"): 100}
    assert MAX_TASKS == max(
        experiment["scenario"].get("num_tasks", 5)
        for path in PAPERS
        for name, experiment in yaml.safe_load(path.read_text())["experiments"].items()
        if name != "readme_tiny_imagenet_100task"
    )


def exercised(runs) -> set[tuple]:
    """(method, dataset, backbone, its arguments, axis=value) of every grid value the runs take."""
    return {
        (run.method, run.dataset, run.backbone, repr(run.backbone_args), part)
        for run in runs
        for part in run.point.split(",")
    }


def test_sweeps_that_differ_only_in_task_count_share_one_covering_set():
    real = validate(yaml.safe_load((ROOT / "config/papers/cl-with-dst.yaml").read_text()), SCHEMA)
    rehearsal = rehearsal_config(real, "resources/rehearsal")
    kept = covering_points(rehearsal, plan_runs(rehearsal, SCHEMA))
    points = {name: len({p.run.point for p in kept if p.run.experiment == name}) for name in real["experiments"]}
    # the 5-task CIFAR-100 sweep runs all four growth modes (and both inits, all three densities),
    # the 10- and 20-task ones on the same network one point each; miniImageNet's ResNet-18 all four again
    assert points["sweep_cifar100_5task"] == 4 and points["sweep_mini_imagenet_10task"] == 4
    assert points["sweep_cifar100_10task"] == points["sweep_cifar100_20task"] == 1
    assert points["readme_cifar100_20task"] == points["packnet_cifar100_20task"] == 1


def test_a_real_report_refuses_a_rehearsals_results(tmp_path):
    runs = tmp_path / "results" / "rehearsal" / "focil" / "runs" / "e" / "p" / "seed0"
    files = [runs / name for name in ("metrics.parquet", "matrix.csv", "curves.parquet")]
    with pytest.raises(DataError, match="a rehearsal's result; a real report reads only real runs"):
        build_report(files[:1], files[1:2], files[2:], '{"entries": [], "papers": {}}', tmp_path / "t", tmp_path / "p")
    assert not (tmp_path / "t").exists()


def planned_rules(workdir: Path, *config: str) -> set[str]:
    """The rules `snakemake -n all` would run for the config in `workdir`."""
    out = snakemake(workdir, "-n", "all", "--config", *config, timeout=900).stdout
    return {rule for rule, _ in planned_jobs(out)}


@pytest.mark.slow
@pytest.mark.parametrize("name", REHEARSED_IN_CI)
def test_a_paper_configuration_rehearses_end_to_end(tmp_path, name):
    config = yaml.safe_load((ROOT / "config/papers" / f"{name}.yaml").read_text())
    write_config(tmp_path, config)
    # every stage kind of the real run, from synthetic files through the real download step
    assert planned_rules(tmp_path, "rehearse=true") == planned_rules(tmp_path, "rehearse=false") | {"synth_raw"}
    snakemake(tmp_path, "all", "--cores", "2", "--resources", "gpu=1", "--config", "rehearse=true", timeout=3600)
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "all", "--config", "rehearse=true").stdout
    root = tmp_path / "results" / "rehearsal" / config["name"]
    # apart from real results and data, and saying so first
    assert {p.name for p in (tmp_path / "results").iterdir()} == {"rehearsal"}
    assert {p.name for p in (tmp_path / "resources").iterdir()} == {"rehearsal"}
    for table in ("summary.md", "reproduction.md"):
        assert NOTICE in (root / "tables" / table).read_text().splitlines()[0]
    # a ledger row for every reported entry
    ledger = (root / "tables" / "reproduction.csv").read_text().splitlines()
    assert ledger[0] == f"# {NOTICE}"
    reported = sum(len(e.get("reported", [])) for e in config["experiments"].values())
    assert len(ledger) - 2 >= reported
