#!/usr/bin/env python3
"""Submit one Snakemake job script to SLURM; print its job id (cluster-generic submit command).

Snakemake calls `sbatch-submit.py JOBSCRIPT`. The job's rule, threads and resources
come from the `# properties = {json}` line Snakemake writes into the job script,
and become sbatch flags:

    threads          --cpus-per-task      slurm_partition  --partition
    mem_mb           --mem (MB)           slurm_account    --account
    mem_mb_per_cpu   --mem-per-cpu        qos              --qos
    runtime (min)    --time               constraint       --constraint
    gpu=N            --gres=gpu:N         gres             --gres (instead of gpu/gpu_model)
    gpu_model=M      --gres=gpu:M:N       slurm_extra      appended as is (shell words)

`--gres` (rather than `--gpus`) also works on Slurm older than 19.05. Each job's
output goes to .snakemake/cluster_logs/<rule>/<jobid>.log. Standard library only.
"""

import json
import os
import shlex
import subprocess
import sys


def properties(jobscript):
    with open(jobscript) as fh:
        for line in fh:
            if line.startswith("# properties = "):
                return json.loads(line[len("# properties = ") :])
    sys.exit(f"sbatch-submit.py: no '# properties' line in {jobscript}")


def sbatch_args(props):
    res = props.get("resources", {})
    name = props.get("rule") or f"group_{props.get('groupid', 'job')}"
    logdir = os.path.join(".snakemake", "cluster_logs", name)
    os.makedirs(logdir, exist_ok=True)
    args = [
        "--parsable",
        f"--job-name=smk_{name}",
        f"--output={logdir}/%j.log",
        "--ntasks=1",
        f"--cpus-per-task={int(props.get('threads') or 1)}",
    ]
    flags = {
        "slurm_partition": "--partition",
        "slurm_account": "--account",
        "qos": "--qos",
        "constraint": "--constraint",
    }
    args += [f"{flag}={res[key]}" for key, flag in flags.items() if res.get(key)]
    if res.get("mem_mb_per_cpu"):
        args.append(f"--mem-per-cpu={int(res['mem_mb_per_cpu'])}")
    elif res.get("mem_mb"):
        args.append(f"--mem={int(res['mem_mb'])}")
    if res.get("runtime"):
        args.append(f"--time={int(res['runtime'])}")
    if res.get("gres"):
        args.append(f"--gres={res['gres']}")
    elif res.get("gpu"):
        model = f"{res['gpu_model']}:" if res.get("gpu_model") else ""
        args.append(f"--gres=gpu:{model}{int(res['gpu'])}")
    if res.get("slurm_extra"):
        args += shlex.split(str(res["slurm_extra"]))
    return args


def main():
    jobscript = sys.argv[-1]
    cmd = ["sbatch", *sbatch_args(properties(jobscript)), jobscript]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    except subprocess.CalledProcessError as err:
        sys.exit(f"sbatch-submit.py: {shlex.join(cmd)} failed:\n{err.stderr.strip()}")
    except subprocess.TimeoutExpired:
        sys.exit(f"sbatch-submit.py: {shlex.join(cmd)} did not answer in 120 s")
    # --parsable prints "jobid" or "jobid;cluster"
    print(out.stdout.strip().split(";")[0])


if __name__ == "__main__":
    main()
