"""The demo grid on a real (single-node, throwaway) SLURM cluster, with the project's slurm profile.

Starts the cluster of tests/slurm/start-slurm.sh (root + apt; skipped elsewhere, but
SPARSECL_REQUIRE_SLURM=1 turns every skip into a failure, as in CI), runs a reduced
demo config locally and with `--workflow-profile workflow/profiles/slurm`, and checks:
every training and evaluation stage ran as its own SLURM job with a GPU allocated,
the tables equal the local run's, a job that fails is retried with scaled
resources, and a job the scheduler kills mid-run leaves no partial output and is
redone from its epoch-level resume state. Every wait is bounded (`timeout -k`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sparsecl.io import read_parquet_provenance

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "slurm"
REQUIRED = os.environ.get("SPARSECL_REQUIRE_SLURM") == "1"

# Reduced grid (see the comment in the file): 2 methods x 1 seed x 2 tasks on digits.
CONFIG = HERE / "config.yaml"
RUNS = ["finetune/default/seed0", "joint/default/seed0"]
TASKS = [0, 1]
# Fault injection (tests/slurm/faults/sparsecl): both at the first DAG level of
# training, so their retries overlap and cost one round of scheduling.
FAULTS = {"finetune/default/seed0/task0": "fail", "joint/default/seed0/task0": "cancel"}

# Upper bounds in seconds; a hang fails the test, it never stalls CI. Measured on a 2-core
# machine: cluster start 1 s (14 s with the apt install), local run 35 s idle (90-125 s with
# a load of 5-7), slurm run 150-200 s under that load; the whole module 4.5-5 min loaded.
START_LIMIT, LOCAL_LIMIT, SLURM_LIMIT, GENERIC_LIMIT, STOP_LIMIT = 240, 240, 330, 240, 90


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"SLURM test required (SPARSECL_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


def bounded(cmd: list[str], limit: int, log: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run cmd under `timeout -k` (SIGTERM at `limit` s, SIGKILL 15 s later), output to `log`.

    The test's Python environment comes first on PATH, so jobs find its `sparsecl`.
    """
    env = dict(kwargs.pop("env", os.environ))
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    with open(log, "w") as out:
        result = subprocess.run(
            ["timeout", "-k", "15", str(limit), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=limit + 30,
            env=env,
            **kwargs,
        )
    return result


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def snakemake_bin() -> str:
    local = Path(sys.executable).parent / "snakemake"
    return str(local) if local.exists() else (shutil.which("snakemake") or "snakemake")


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as key=value pairs (finished jobs stay visible for MinJobAge)."""
    out = subprocess.run(
        ["timeout", "-k", "5", "20", "scontrol", "show", "job", "--oneliner", str(job_id)],
        capture_output=True,
        text=True,
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def gpu_tres(value: str | None) -> str | None:
    """'gres:gpu:fake:1' (Slurm 22.05) or 'gres/gpu:fake:1' (newer) -> 'fake:1'."""
    match = re.fullmatch(r"gres[:/]gpu:(\S+)", value or "")
    return match.group(1) if match else None


def mem_mb(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([MGT]?)", value).groups()
    return int(number) * {"": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]


def minutes(value: str) -> int:
    """SLURM time limit ([days-]HH:MM:SS) in minutes."""
    days, _, clock = value.rpartition("-")
    hours, mins, _secs = (int(p) for p in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        unavailable("the throwaway cluster needs Linux")
    if os.geteuid() != 0:
        unavailable("starting the throwaway SLURM cluster needs root")
    if not (shutil.which("sbatch") or shutil.which("apt-get")):
        unavailable("no SLURM installed and no apt-get to install it (Debian/Ubuntu only)")
    for plugin in ("snakemake_executor_plugin_slurm", "snakemake_executor_plugin_cluster_generic"):
        try:
            __import__(plugin)
        except ImportError:
            unavailable(f"{plugin} is not installed (pip install -e '.[slurm]')")
    logs = tmp_path_factory.mktemp("cluster")
    run_dir = Path(os.environ.get("SLURM_RUN_DIR", "/run/sparsecl-slurm"))
    already_up = (run_dir / "slurmctld.pid").exists() and subprocess.run(
        ["timeout", "5", "scontrol", "ping"], capture_output=True, text=True
    ).stdout.count("is UP") > 0
    started = time.monotonic()
    try:
        result = bounded(["bash", str(HERE / "start-slurm.sh")], START_LIMIT, logs / "start.log")
        assert result.returncode == 0, f"start-slurm.sh failed ({result.returncode}):\n{tail(logs / 'start.log')}"
        print(f"cluster up in {time.monotonic() - started:.0f} s")
        yield
    finally:  # stop only a cluster this test started (stop-slurm.sh stops only what start-slurm.sh started)
        if not already_up:
            bounded(["bash", str(HERE / "stop-slurm.sh")], STOP_LIMIT, logs / "stop.log")


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """A snapshot of the workflow, so that edits to the tree during the test change nothing.

    Jobs still run the installed `sparsecl`; the snapshot fixes what Snakemake plans and the
    code fingerprints it compares, which cluster jobs re-check when they start.
    """
    repo = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(ROOT / "Snakefile", repo / "Snakefile")
    for part in ("workflow", "src", "config", "envs"):
        if (ROOT / part).exists():
            shutil.copytree(ROOT / part, repo / part, ignore=ignore)
    return repo


def snakemake_cmd(workflow: Path, workdir: Path, *args: str) -> list[str]:
    # target first: --configfile and --set-resources take every word after them
    return [
        snakemake_bin(), "all", "--snakefile", str(workflow / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(CONFIG), *args,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local_run(workflow, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    log = workdir / "snakemake.log"
    started = time.monotonic()
    cmd = snakemake_cmd(workflow, workdir, "--workflow-profile", "none", "--cores", "2")
    result = bounded(cmd, LOCAL_LIMIT, log, cwd=workdir)
    assert result.returncode == 0, f"local run failed ({result.returncode}):\n{tail(log)}"
    print(f"local run: {time.monotonic() - started:.0f} s")
    return workdir


@pytest.fixture(scope="module")
def slurm_run(cluster, workflow, local_run, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("slurm")
    faults = workdir / "faults"
    faults.mkdir()
    (faults / "plan.json").write_text(json.dumps(FAULTS))
    env = dict(
        os.environ,
        PATH=os.pathsep.join([str(HERE / "faults"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        SPARSECL_FAULTS=str(faults),
    )
    log = workdir / "snakemake.log"
    cmd = snakemake_cmd(
        workflow, workdir,
        "--workflow-profile", str(workflow / "workflow/profiles/slurm"),
        # CI speed: first status check after 5 s instead of the profile's 20 s
        "--slurm-init-seconds-before-status-checks", "5",
        # exercise gpu_model on the training rules: sbatch --gpus=fake:1
        "--set-resources", "finetune_train:gpu_model=fake", "joint_train:gpu_model=fake",
    )  # fmt: skip
    started = time.monotonic()
    result = bounded(cmd, SLURM_LIMIT, log, env=env, cwd=workdir)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        cancel_jobs_in(workdir)
    assert result.returncode == 0, f"slurm run failed ({result.returncode}) after {elapsed:.0f} s:\n{tail(log)}"
    print(f"slurm run: {elapsed:.0f} s")
    return workdir


@pytest.fixture(scope="module")
def grouped_run(cluster, workflow, slurm_run, tmp_path_factory) -> Path:
    """The same grid with `group_runs`: one SLURM job per run instead of one per stage."""
    workdir = tmp_path_factory.mktemp("grouped")
    log = workdir / "snakemake.log"
    cmd = snakemake_cmd(
        workflow, workdir,
        "--workflow-profile", str(workflow / "workflow/profiles/slurm"),
        "--slurm-init-seconds-before-status-checks", "5",
        "--config", "gpus_per_job=1", "group_runs=true",
    )  # fmt: skip
    started = time.monotonic()
    result = bounded(cmd, SLURM_LIMIT, log, cwd=workdir)
    if result.returncode != 0:
        cancel_jobs_in(workdir)
    assert result.returncode == 0, f"grouped slurm run failed ({result.returncode}):\n{tail(log)}"
    print(f"grouped slurm run: {time.monotonic() - started:.0f} s")
    return workdir


def submissions(workdir: Path) -> int:
    """SLURM jobs the run submitted (first attempts and retries)."""
    return len(re.findall(r"has been submitted with SLURM jobid", (workdir / "snakemake.log").read_text()))


def cancel_jobs_in(workdir: Path) -> None:
    """scancel the jobs a failed or killed run left queued (those working in `workdir`)."""
    out = subprocess.run(
        ["timeout", "-k", "5", "20", "squeue", "--noheader", "--format=%i %Z"], capture_output=True, text=True
    ).stdout
    ids = [job for job, _, cwd in (line.partition(" ") for line in out.splitlines()) if cwd == str(workdir)]
    if ids:
        subprocess.run(["timeout", "-k", "5", "20", "scancel", *ids])


def fault_events(slurm_run: Path, job: str) -> list[dict]:
    lines = (slurm_run / "faults/events.jsonl").read_text().splitlines()
    return sorted((e for e in map(json.loads, lines) if e["job"] == job), key=lambda e: e["attempt"])


# ------------------------------------------------------------------------------- tests


def test_every_task_ran_as_its_own_slurm_job_with_a_gpu_and_was_evaluated_there(slurm_run):
    job_ids = []
    for run in RUNS:
        for task in TASKS:
            directory = slurm_run / "results/runs" / run / f"task{task}"
            train, evaluation = (
                read_parquet_provenance(directory / name).get("scheduler", {})
                for name in ("train_log.parquet", "eval.parquet")
            )
            assert train.get("slurm_job_id"), f"{directory}: not trained by SLURM: {train}"
            assert train.get("cuda_visible_devices", "") != "", f"{directory}: no GPU allocated: {train}"
            assert evaluation.get("slurm_job_id") == train["slurm_job_id"], (train, evaluation)
            job = scontrol_job(train["slurm_job_id"])
            assert job.get("JobState") == "COMPLETED", job
            # the job was submitted for exactly this rule and these wildcards ...
            experiment, point, seed = run.split("/")
            rule = f"{experiment}_train"  # each experiment is named after its method
            assert job.get("Comment") == f"rule_{rule}_wildcards_{experiment}_{point}_{seed[4:]}_{task}", job
            # ... and SLURM allocated it a GPU of the requested model
            assert gpu_tres(job.get("TresPerJob")) == "fake:1", job
            job_ids.append(train["slurm_job_id"])
    assert len(set(job_ids)) == len(job_ids)


def test_tables_equal_the_local_run(slurm_run, local_run):
    for table in ["results/tables/summary.csv"] + [f"results/runs/{run}/accuracy_matrix.csv" for run in RUNS]:
        pd.testing.assert_frame_equal(pd.read_csv(slurm_run / table), pd.read_csv(local_run / table), check_exact=True)


def test_local_rules_ran_on_the_submit_host(slurm_run):
    logs = slurm_run / ".snakemake/slurm_logs"
    assert (logs / "rule_finetune_train").is_dir()
    assert not (logs / "rule_report").exists()
    assert re.search(r"^localrule report:", (slurm_run / "snakemake.log").read_text(), re.M)


def test_status_checks_used_squeue(slurm_run):
    # with MinJobAge too short the plugin silently falls back to sacct, which hangs without a DB
    assert "Falling back to 'sacct'" not in (slurm_run / "snakemake.log").read_text()


def test_a_failed_job_is_retried(slurm_run):
    events = fault_events(slurm_run, "finetune/default/seed0/task0")
    assert [e["attempt"] for e in events] == [1, 2], events
    first, second = (scontrol_job(e["slurm_job_id"]) for e in events)
    assert first.get("JobState") == "FAILED", first
    assert second.get("JobState") == "COMPLETED", second
    assert events[1]["present"] == [], "the failed attempt left outputs behind"


def test_retries_scale_memory_and_runtime(slurm_run):
    first, second = (scontrol_job(e["slurm_job_id"]) for e in fault_events(slurm_run, "finetune/default/seed0/task0"))
    memory = [mem_mb(job["MinMemoryNode"]) for job in (first, second)]
    runtime = [minutes(job["TimeLimit"]) for job in (first, second)]
    assert memory[1] == 2 * memory[0] and runtime[1] == 2 * runtime[0], (
        f"attempt 2 asked for mem {memory[1]} MB / {runtime[1]} min, attempt 1 for {memory[0]} MB / "
        f"{runtime[0]} min: the GPU rules' mem_mb and runtime must scale with `attempt` (docs/cluster.md)"
    )


def test_a_job_killed_mid_run_leaves_no_partial_output_and_resumes(slurm_run):
    job = "joint/default/seed0/task0"
    events = fault_events(slurm_run, job)
    assert [e["attempt"] for e in events] == [1, 2], events
    killed, redone = (scontrol_job(e["slurm_job_id"]) for e in events)
    assert killed.get("JobState") == "CANCELLED", killed
    assert redone.get("JobState") == "COMPLETED", redone
    # the killed attempt left its epoch-level resume state, and none of the declared outputs
    assert events[1]["present"] == ["resume"], events[1]
    log = (slurm_run / "results/logs/train" / (job.rsplit("/", 1)[0]) / "task0.log").read_text()
    assert "resumed task 0 after epoch 1" in log, log
    assert not list((slurm_run / "results/runs").rglob("*.tmp")), "temporary files left in results/runs"
    # same model as without the kill: the tables equal the local run's (test above)


def test_grouping_submits_one_job_per_run_with_the_same_tables(slurm_run, grouped_run):
    # the data preparation, then 2 runs x 2 tasks: 4 training jobs (each evaluates its task) and
    # the two retries of the fault plan, or one job per run
    ungrouped, grouped = submissions(slurm_run), submissions(grouped_run)
    print(f"SLURM submissions for the test grid: {ungrouped} one job per stage, {grouped} grouped by run")
    assert ungrouped == 1 + len(RUNS) * len(TASKS) + len(FAULTS)
    assert grouped == 1 + len(RUNS)
    assert (grouped_run / "results/tables/summary.csv").read_text() == (
        slurm_run / "results/tables/summary.csv"
    ).read_text()


def test_a_rerun_has_nothing_to_do(slurm_run, workflow):
    log = slurm_run / "rerun.log"
    cmd = snakemake_cmd(workflow, slurm_run, "--workflow-profile", str(workflow / "workflow/profiles/slurm"), "-n")
    result = bounded(cmd, 120, log, cwd=slurm_run)
    assert result.returncode == 0, tail(log)
    assert "Nothing to be done" in log.read_text(), tail(log)


def test_cluster_generic_profile_submits_gpu_jobs_with_sbatch(slurm_run, workflow, tmp_path_factory):
    """workflow/profiles/cluster-generic: sbatch-submit.py maps the resources, slurm-status.sh tracks the jobs.

    To stay within the CI budget it redoes only the last training task of one run (which
    evaluates it in the same job), in a copy of the finished slurm run.
    """
    workdir = tmp_path_factory.mktemp("generic")
    for part in ("results", "resources", ".snakemake/metadata"):
        shutil.copytree(slurm_run / part, workdir / part, symlinks=True)
    run = "joint/default/seed0"
    model, evaluation = (f"results/runs/{run}/task1/{name}" for name in ("model.pt", "eval.parquet"))
    log = workdir / "snakemake.log"
    cmd = [
        snakemake_bin(), evaluation, "--forcerun", model,
        "--snakefile", str(workflow / "Snakefile"), "--directory", str(workdir), "--configfile", str(CONFIG),
        "--workflow-profile", str(workflow / "workflow/profiles/cluster-generic"),
        "--seconds-between-status-checks", "2",  # CI speed; the profile polls every 10 s
        "--set-resources", "joint_train:gpu_model=fake",
    ]  # fmt: skip
    result = bounded(cmd, GENERIC_LIMIT, log, cwd=workdir)
    if result.returncode != 0:
        cancel_jobs_in(workdir)
    assert result.returncode == 0, tail(log)
    for path in (f"results/runs/{run}/task1/train_log.parquet", evaluation):
        scheduler = read_parquet_provenance(workdir / path)["scheduler"]
        job = scontrol_job(scheduler["slurm_job_id"])
        assert job.get("JobState") == "COMPLETED" and job.get("JobName") == "smk_joint_train", job
        assert gpu_tres(job.get("TresPerNode")) == "fake:1", job
        assert mem_mb(job["MinMemoryNode"]) >= 1000 and minutes(job["TimeLimit"]) >= 1, job
        assert scheduler.get("cuda_visible_devices", "") != "", scheduler
        assert (workdir / ".snakemake/cluster_logs/joint_train" / f"{scheduler['slurm_job_id']}.log").exists()
    pd.testing.assert_frame_equal(
        pd.read_parquet(workdir / evaluation), pd.read_parquet(slurm_run / evaluation), check_exact=True
    )
