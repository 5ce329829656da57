# Config -> table of runs, path helpers and wildcard constraints. No rules here.

import json
import os
import re
import shutil
import sys
import hashlib
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from sparsecl import fingerprint as fingerprints  # noqa: E402
from sparsecl import roots  # noqa: E402
from sparsecl.launcher import SERVER_ENV  # noqa: E402
from sparsecl.data import sources as data_sources  # noqa: E402
from sparsecl.data.unlabeled import POOLS, pool_dir, resolve_pool  # noqa: E402
from sparsecl.errors import ConfigError  # noqa: E402
from sparsecl.io import config_hash  # noqa: E402
from sparsecl.plans import plan_of  # noqa: E402
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


def check_output_roots(*roots_):
    """A results or resources path that is a file, or a folder we cannot write, stops the run in
    one line here rather than in Snakemake's own directory scan."""
    for root in roots_:
        if os.path.exists(root) and not (
            os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK)
        ):
            stop(f"{root}: expected a writable directory for the run's outputs")


check_output_roots(*sorted({RESULTS.split("/")[0], RESULTS, RESOURCES}))


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    point=r"[^/]+",
    seed=r"\d+",
    task=r"\d+",
    dataset=r"[a-z0-9_]+",


def code_fingerprint(*modules):
    """Hash of the package code that importing `modules` runs (sparsecl/fingerprint.py), so a code
    change reruns exactly the stages that run it; comments and docstrings do not count.

    Cluster jobs re-plan their part of the DAG when they start: they take the submitting
    process's fingerprints from the environment they inherit, so that editing src/ during a
    run cannot make a job redo earlier tasks of its run inside its allocation.
    """
    key = f"SPARSECL_CODE_{hashlib.sha256(repr(modules).encode()).hexdigest()[:12]}"
    if workflow.remote_exec and key in os.environ:
        return os.environ[key]
    os.environ[key] = fingerprints.fingerprint(modules)
    return os.environ[key]


def stage_code(method, backbone, dataset):
    """Training and evaluation run the stage code, the run's method, backbone and dataset modules."""
    return code_fingerprint(
        "sparsecl.stages",
        fingerprints.registered_module("method", method),
        fingerprints.registered_module("backbone", backbone),
        fingerprints.registered_module("dataset", dataset),
    )


STAGE_CODE = {
    key: stage_code(*key)
    for key in sorted({(p.run.method, p.run.backbone, p.run.dataset) for p in PLANNED})
}


def train_code(wildcards):
    """Fingerprint of the code that trains and evaluates this run."""
    run = run_of(wildcards)
    return STAGE_CODE[(run.method, run.backbone, run.dataset)]


def data_code(wildcards):
    """Preparing a dataset runs its module and the prepared-data format, not the download code."""
    return code_fingerprint(
        fingerprints.registered_module("dataset", wildcards.dataset),
        "sparsecl.data.store",
    )


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


def method_experiments(*methods):
    """Regex matching the experiments of `methods` (never matches if there are none)."""
    names = sorted({p.run.experiment for p in PLANNED if p.run.method in methods})
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


# Methods with rules of their own (several stages per task, further outputs, or a rule name of
# their own for cluster resources). Every other method trains one stage per task through the
# generic training rule (baselines.smk), so a new single-stage method needs no rule.
OWN_RULES = ("dst", "focil", "multistep", "tickets_cil", "tickets_td", "tickets_bu")


def single_stage_experiments():
    """Regex matching the experiments that the generic training rule runs."""
    methods = {p.run.method for p in PLANNED} - set(OWN_RULES)
    return method_experiments(*methods)


def run_of(wildcards):
    run_id = f"{wildcards.experiment}/{wildcards.point}/seed{wildcards.seed}"
    try:
        return RUNS[run_id].run
    except KeyError:
        raise WorkflowError(f"no run {run_id!r} in the config") from None


def run_path(run, *parts):
    return os.path.join(RESULTS, "runs", run.run_id, *parts)


def data_dir(dataset):
    return f"{RESOURCES}/data/{dataset}"


def scenario_file(run):
    return f"{RESOURCES}/scenarios/{run.dataset}/{run.scenario_id}.json"


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


def stage_config(run, kind):
    """The settings the jobs of stage kind `kind` read (the plan's `stage_keys`), or with no kind
    the run's config."""
    if kind is None:
        return run_path(run, "config.yaml")
    return run_path(run, "stage_configs", f"{kind}.yaml")


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
    return method_experiments(
        *{p.run.method for p in PLANNED if plan_of(p.run.method).stage_keys}
    )


def stage_inputs(wildcards, kind=None):
    """What every per-task stage of a run reads: its config (the stage kind's, when given), the
    prepared data and the scenario."""
    run = run_of(wildcards)
    return {
        "config": stage_config(run, kind),
        "meta": f"{data_dir(run.dataset)}/meta.json",
        "scenario": scenario_file(run),
    }


def train_inputs(wildcards):
    inputs = stage_inputs(wildcards)
    task = int(wildcards.task)
    if task > 0:
        run = run_of(wildcards)
        inputs["prev_model"] = run_path(run, f"task{task - 1}", "model.pt")
        inputs["prev_masks"] = run_path(run, f"task{task - 1}", "masks.pt")
    return inputs


def task_file_args(wildcards):
    """The options of a task's job that depend on the task: the data directory, the previous
    task's model and masks, the masks of every earlier task (which its evaluation reads; they
    are ancestors of the previous task's files, so they are not declared a second time) and the
    epoch-level resume state, kept outside the declared outputs (Snakemake deletes those on failure).
    """
    run = run_of(wildcards)
    task = int(wildcards.task)
    args = [
        f"--data-dir {data_dir(run.dataset)}",
        f"--resume {RESULTS}/resume/{run.run_id}/task{task}.pt",
    ]
    if task > 0:
        previous = run_path(run, f"task{task - 1}")
        args.append(
            f"--prev-model {previous}/model.pt --prev-masks {previous}/masks.pt"
        )
    args += [
        f"--eval-masks {run_path(run, f'task{t}', 'masks.pt')}" for t in range(task)
    ]
    return " ".join(args)


# Methods with several stages per task say which stage's evaluation stands for each task
# (method name -> function(run, task) -> eval file); single-stage methods evaluate task<t>/.
FINAL_EVALS = {}


def task_eval(run, task):
    final = FINAL_EVALS.get(run.method)
    return final(run, task) if final else run_path(run, f"task{task}", "eval.parquet")


# Further files a run's summary waits for, so that `all` builds them (method name ->
# function(run) -> paths), e.g. the evaluation of every stage, not only each task's last.
RUN_EXTRAS = {}


def summarize_inputs(wildcards):
    run = run_of(wildcards)
    return {
        "config": run_path(run, "config.yaml"),
        "evals": [task_eval(run, t) for t in range(run.scenario.num_tasks)],
        "extras": RUN_EXTRAS[run.method](run) if run.method in RUN_EXTRAS else [],
    }


def all_metrics():
    return [run_path(p.run, "metrics.parquet") for p in PLANNED]


def all_matrices():
    return [run_path(p.run, "accuracy_matrix.csv") for p in PLANNED]


def all_curves():
    return [run_path(p.run, "curves.parquet") for p in PLANNED]


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


def report_outputs():
    tables = [
        f"{RESULTS}/tables/summary.{ext}" for ext in ("md", "html", "csv", "parquet")
    ] + [f"{RESULTS}/tables/reproduction.{ext}" for ext in ("md", "html", "csv")]
    plots = (
        [f"{RESULTS}/plots/comparison/{setting}.png" for setting in report_settings()]
        + [
            f"{RESULTS}/plots/{experiment}/{point}/accuracy_matrix.png"
            for experiment, point in experiment_points()
        ]
        + [
            f"{RESULTS}/plots/{experiment}/accuracy_curve.png"
            for experiment in sorted({e for e, _ in experiment_points()})
        ]
        + [
            f"{RESULTS}/plots/ledger/{paper_slug(paper)}.png"
            for paper in curve_papers()
        ]
    )
    return tables + plots


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


def unlabeled_pool(dataset):
    """The pool files runs on `dataset` read ({pool, pool_meta}), per `data.unlabeled_pool`.

    For the rules of methods that distil on unlabeled images (Lifelong Tickets).
    """
    try:
        pool = resolve_pool(config["data"]["unlabeled_pool"], dataset)
    except ConfigError as err:
        raise WorkflowError(f"config error: {err}") from None
    return {
        "pool": f"{pool_dir(pool, dataset, f'{RESOURCES}/data')}/pool.npy",
        "pool_meta": f"{pool_dir(pool, dataset, f'{RESOURCES}/data')}/meta.json",
    }


def pool_source(wildcards):
    """The Tiny Images pickle, the prepared CIFAR training images, or for the empty pool
    (`none/<dataset>`) the prepared dataset whose image shape it takes."""
    if wildcards.pool == "tiny_images":
        return data_sources.raw_paths("tiny_images", RAW_ROOT)
    if wildcards.pool.startswith("none/"):
        return [f"{RESOURCES}/data/{wildcards.pool.split('/')[1]}/meta.json"]
    return [
        f"{RESOURCES}/data/{wildcards.pool}/meta.json",
        f"{RESOURCES}/data/{wildcards.pool}/train/images.npy",
    ]


def pool_source_arg(wildcards, input):
    if wildcards.pool == "tiny_images":
        return f"--source {input[0]}"
    return f"--source {Path(input[0]).parent}"


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
    import subprocess
    import tempfile
    import time

    address = Path(tempfile.gettempdir()) / f"sparsecl-{os.getpid()}.sock"
    log = Path(RESULTS, "logs", "stage_server.log")
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")
    except OSError as err:
        raise WorkflowError(
            f"{log}: cannot be written ({err.strerror}); expected {RESULTS}/ to be a writable directory"
        ) from None
    with out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sparsecl.cli",
                "serve",
                "--socket",
                str(address),
                "--parent",
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.time() + 60
    while not address.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if address.exists():
        STAGE_SERVER["process"] = process
        os.environ[SERVER_ENV] = str(address)


def stop_stage_server():
    process = STAGE_SERVER.pop("process", None)
    if process is not None:
        process.terminate()
        os.environ.pop(SERVER_ENV, None)


def attempt_scaled(base):
    """`base` on a job's first attempt, 2 x `base` on its first retry, ... (for mem_mb and runtime)."""
    return lambda wildcards, attempt: base * attempt
