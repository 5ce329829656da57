# Config -> table of runs, path helpers and wildcard constraints. No rules here.

import json
import os
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from sparsecl import fingerprint as fingerprints  # noqa: E402
from sparsecl import roots  # noqa: E402
from sparsecl import server as stage_server  # noqa: E402
from sparsecl.launcher import SERVER_ENV  # noqa: E402
from sparsecl.data import sources as data_sources  # noqa: E402
from sparsecl.data.unlabeled import POOLS, pool_sources  # noqa: E402
from sparsecl.errors import ConfigError, DataError  # noqa: E402
from sparsecl.io import config_hash  # noqa: E402
from sparsecl.layout import Layout, either, evaluated_apart, job_args  # noqa: E402
from sparsecl.plans import plan_of, stage_rules  # noqa: E402
from sparsecl.experiments import (  # noqa: E402
    check_config_files,
    load_schema,
    paper_slug,
    plan_ledger,
    plan_runs,
    validate,
)


def stop(message):
    """A mistake found while planning (the config, where results go): one line on the console and
    exit status 1, without Snakemake's traceback of the Snakefile."""
    print(message, file=sys.stderr)
    sys.exit(1)


SCHEMA = load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
try:
    check_config_files(workflow.configfiles)
    config.update(validate(config, SCHEMA))
    REHEARSAL = roots.is_rehearsal(config)
    if REHEARSAL:  # sparsecl/rehearsal.py: the same DAG on tiny synthetic data
        from sparsecl import rehearsal

        config.update(rehearsal.rehearsal_config(config, roots.resources_root(config)))
    PLANNED = plan_runs(config, SCHEMA)
    LEDGER = plan_ledger(config, PLANNED)
    if REHEARSAL:  # the ledger keeps every entry; the points left out read "not run"
        PLANNED = rehearsal.covering_points(config, PLANNED)
except ConfigError as err:
    stop(f"config error: {err}")
RUNS = {p.run.run_id: p for p in PLANNED}
# Each config writes under its own results root (sparsecl/roots.py), so a paper's tables, ledger
# and plots never mix with another config's.
RESULTS = roots.results_root(config)
RESOURCES = roots.resources_root(config)


unwritable = roots.unwritable(RESULTS.split("/")[0], RESULTS, RESOURCES)
if unwritable:
    stop(f"{unwritable}: expected a writable directory for the run's outputs")


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    point=r"[^/]+",
    seed=r"\d+",
    task=r"\d+",
    dataset=r"[a-z0-9_]+",


def code_fingerprint(*modules):
    """Hash of the package code that importing `modules` runs (sparsecl/fingerprint.py), so a code
    change reruns exactly the stages that run it; comments and docstrings do not count.
    """
    return fingerprints.inherited(modules, reuse=workflow.remote_exec)


STAGE_CODE = {
    key: code_fingerprint(*fingerprints.stage_modules(*key))
    for key in sorted({(p.run.method, p.run.backbone, p.run.dataset) for p in PLANNED})
}


def train_code(wildcards):
    """Fingerprint of the code that trains and evaluates this run."""
    run = run_of(wildcards)
    return STAGE_CODE[(run.method, run.backbone, run.dataset)]


def data_code(wildcards):
    """Preparing a dataset runs its module and the prepared-data format, not the download code."""
    dataset = fingerprints.registered_module("dataset", wildcards.dataset)
    return code_fingerprint(dataset, "sparsecl.data.store")


POOL_CODE = code_fingerprint("sparsecl.data.unlabeled")
SCENARIO_CODE = code_fingerprint("sparsecl.scenarios")
SUMMARY_CODE = code_fingerprint("sparsecl.summary")
REPORT_CODE = code_fingerprint("sparsecl.report.build")


def gpus_per_job():
    """1 when training runs on a GPU (explicit cuda, or auto with an NVIDIA driver), else 0."""
    requested = config.get("gpus_per_job", "auto")
    if requested != "auto":
        return int(requested)
    device = config["device"]
    if device.startswith("cuda"):
        return 1
    return int(device == "auto" and shutil.which("nvidia-smi") is not None)


GPUS = gpus_per_job()
# The group of a run's training and evaluation jobs on a cluster (`group_runs`), else none.
RUN_GROUP = "run" if config["group_runs"] in (True, "true") else None


def experiments_of(*methods):
    """Regex matching the experiments of `methods` (never matches if there are none)."""
    return either(p.run.experiment for p in PLANNED if p.run.method in methods)


def run_of(wildcards):
    run_id = f"{wildcards.experiment}/{wildcards.point}/seed{wildcards.seed}"
    try:
        return RUNS[run_id].run
    except KeyError:
        raise WorkflowError(f"no run {run_id!r} in the config") from None


LAYOUT = Layout(RESULTS, RESOURCES, config["data"]["unlabeled_pool"])
run_path = LAYOUT.run_path
data_dir = LAYOUT.data_dir
scenario_file = LAYOUT.scenario_file


SCENARIOS = {(p.run.dataset, p.run.scenario_id): p.run.scenario for p in PLANNED}


def scenario_spec_json(wildcards):
    from dataclasses import asdict

    spec = SCENARIOS[(wildcards.dataset, wildcards.scenario)]
    return json.dumps(asdict(spec), sort_keys=True)


def run_config_json(wildcards):
    return json.dumps(run_of(wildcards).to_dict(), sort_keys=True)


def config_file_hash(wildcards, input):
    """The hash the run (or stage) config file a job reads must carry: what the workflow config
    resolves to now. A file edited by hand, even with its own hash recomputed, is refused.
    """
    run = run_of(wildcards)
    if Path(input.config).parent.name == "stage_configs":
        run = plan_of(run.method).stage_run(run, Path(input.config).stem)
    return config_hash(run.to_dict())


def stage_config_json(wildcards):
    """A stage kind's settings (checked with the run's while planning: sparsecl.plans)."""
    run = run_of(wildcards)
    try:
        stage_run = plan_of(run.method).stage_run(run, wildcards.stage)
    except ConfigError as err:
        raise WorkflowError(f"{run.run_id}: {err}") from None
    return json.dumps(stage_run.to_dict(), sort_keys=True)


def stage_config_experiments():
    """Regex matching the experiments whose plans read a config per stage kind."""
    return experiments_of(
        *{p.run.method for p in PLANNED if plan_of(p.run.method).stage_keys}
    )


# ---------------------------------------------------------------- plans -> jobs
#
# stages.smk makes one rule per stage shape (sparsecl.plans.rules); their input functions ask the
# run's plan, job by job, which files a stage reads (sparsecl.layout). A deciding stage is a
# checkpoint: `decide` waits for its decision.json, so the stages after it exist once it has run.

STAGE_RULES = stage_rules(p.run for p in PLANNED)
RULE_AT = {(r.method, r.kind, t): r for r in STAGE_RULES for t in r.tasks}
STAGE_SHELL = (
    "sparsecl train --config {input.config} --config-hash {params.config_hash} --data-dir {params.data_dir}"
    " --scenario {input.scenario} --task {wildcards.task} --stage {params.stage} {params.files}"
    " --out-model {output.model} --out-masks {output.masks} --out-log {output.train_log}"
    " --resume {params.resume} --device {params.device} --threads {threads} >> {log} 2>&1"
)


def decide(run):
    """The plan's `Decide` for `run`: a deciding stage's decision.json, once its checkpoint ran."""

    def read(task, stage):
        shape = RULE_AT[(run.method, stage.kind, task)]
        rounds = {"round": str(stage.round)} if stage.round else {}
        where = {
            "experiment": run.experiment,
            "point": run.point,
            "seed": str(run.seed),
        }
        done = getattr(checkpoints, shape.name).get(**where, task=str(task), **rounds)
        return json.loads(Path(done.output.decision).read_text())

    return read


def planned(function, *args):
    """`function(*args)`, with a mistake in the config as one line instead of a traceback."""
    try:
        return function(*args)
    except (ConfigError, ValueError) as err:
        raise WorkflowError(f"config error: {err}") from None


def planned_stage(wildcards, name):
    """The run, task and plan `Stage` that a job's wildcards name (a one-line error if none)."""
    run, task = run_of(wildcards), int(wildcards.task)
    return run, task, planned(plan_of(run.method).stage, run, task, name, decide(run))


def stage_rule_settings(shape):
    """What the directives of `shape`'s rule (stages.smk) take."""
    job = f"{{experiment}}/{{point}}/seed{{seed}}/{shape.job}"
    name = lambda w: f"{shape.kind}{w.round}" if shape.rounds else shape.kind

    def inputs(wildcards):
        run, task, stage = planned_stage(wildcards, name(wildcards))
        return planned(LAYOUT.job_inputs, run, task, stage, decide(run))

    def resume(wildcards):
        run = run_of(wildcards)
        return f"{RESULTS}/resume/{run.run_id}/{plan_of(run.method).job(int(wildcards.task), name(wildcards))}.pt"

    return {
        "inputs": inputs,
        "outputs": {o: f"{RESULTS}/runs/{job}/{f}" for o, f in shape.outputs.items()},
        "log": f"{RESULTS}/logs/train/{job}.log",
        "benchmark": f"{RESULTS}/benchmarks/train/{job}.tsv",
        "constraints": {
            "experiment": experiments_of(shape.method),
            "task": "|".join(map(str, shape.tasks)),
            "round": r"[1-9][0-9]*",
        },
        "resources": {
            "gpu": GPUS,
            "mem_mb": attempt_scaled(shape.mem_mb),
            "runtime": attempt_scaled(shape.runtime),
        },
        "params": {
            "code": train_code,
            "config_hash": config_file_hash,
            "device": config["device"],
            "stage": name,
            "files": lambda w, input, output: job_args(
                dict(input.items()), output.get("eval")
            ),
            "resume": resume,
            "data_dir": lambda w, input: Path(input.meta).parent,
        },
    }


def evaluation_inputs(wildcards):
    run, task, stage = planned_stage(wildcards, wildcards.stage)
    return planned(LAYOUT.evaluation_inputs, run, task, stage, decide(run))


EVALUATED_METHODS, EVALUATED_STAGES = evaluated_apart(STAGE_RULES)


def summarize_inputs(wildcards):
    run = run_of(wildcards)
    return planned(LAYOUT.summary_inputs, run, decide(run))


def every_run(file):
    """`file` of every planned run (metrics.parquet, accuracy_matrix.csv, curves.parquet)."""
    return [run_path(p.run, file) for p in PLANNED]


def all_data():
    """Prepared data and scenario files of every run (the `data` target)."""
    return sorted(
        {f"{data_dir(p.run.dataset)}/meta.json" for p in PLANNED}
        | {scenario_file(p.run) for p in PLANNED}
    )


def ledger_json():
    """The reference values, and the papers' notes, for the reproduction ledger."""
    ledger = {"entries": LEDGER, "papers": config["papers"], "rehearsal": REHEARSAL}
    return json.dumps(ledger, sort_keys=True)


def curve_papers():
    """Papers with a published per-task curve: the ledger plots each one against ours."""
    return sorted({e["paper"] for e in LEDGER if "curve" in e})


def experiment_points():
    return sorted({(p.run.experiment, p.run.point) for p in PLANNED})


def report_settings():
    """The settings this config's runs are scored in (til, cil, data): one comparison plot each."""
    from sparsecl.summary import settings_of

    return sorted({s for p in PLANNED for s in settings_of(p.run.scenario.kind)})


# ---------------------------------------------------------------- data


try:
    data_sources.check_overrides(config["data"]["sources"])
except ConfigError as err:
    stop(f"config error: {err}")


def data_sources_json():
    """Source overrides (mirror URLs, local archives) for the download jobs."""
    return json.dumps(config["data"]["sources"], sort_keys=True)


RAW_ROOT = f"{RESOURCES}/raw"


def raw_dir(wildcards):
    return data_sources.raw_dir(wildcards.dataset, RAW_ROOT)


def raw_inputs(wildcards):
    """Raw files a dataset's prepare step reads ([] for built-in datasets such as digits)."""
    return data_sources.raw_paths(wildcards.dataset, RAW_ROOT)


def synthetic_raw(wildcards):
    """A rehearsal's download step copies and verifies the source's synthetic files; a real one has no input."""
    return [f"{RESOURCES}/synth/{wildcards.dataset}"] if REHEARSAL else []


# ---------------------------------------------------------------- the stage server


STAGE_SERVER = {}
SWITCH_ENV = "SPARSECL_STAGE_SERVER"  # 0: every job its own process


def start_stage_server():
    """A local run forks its CPU jobs from one warm process (sparsecl/server.py) instead of
    starting and importing torch for each; SPARSECL_STAGE_SERVER=0 turns it off."""
    if not (workflow.is_main_process and workflow.local_exec) or GPUS:
        return
    if os.environ.get(SWITCH_ENV, "1") == "0" or SERVER_ENV in os.environ:
        return
    try:
        started = stage_server.start(
            Path(RESULTS, "logs", "stage_server.log"), os.getpid()
        )
    except DataError as err:
        raise WorkflowError(str(err)) from None
    if started:
        STAGE_SERVER["process"], address = started
        os.environ[SERVER_ENV] = str(address)


def stop_stage_server():
    process = STAGE_SERVER.pop("process", None)
    if process is not None:
        process.terminate()
        os.environ.pop(SERVER_ENV, None)


def attempt_scaled(base):
    """`base` on a job's first attempt, 2 x `base` on its first retry, ... (for mem_mb and runtime)."""
    return lambda wildcards, attempt: base * attempt
