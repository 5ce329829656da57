#!/usr/bin/env bash
# Status command for the cluster-generic executor: prints running, success or
# failed for SLURM job $1, and never waits for long.
#   scontrol  live jobs, and finished ones for MinJobAge (default 300 s);
#   sacct     older jobs, if the cluster has an accounting database.
# A job neither knows is reported failed (Snakemake then retries or stops)
# rather than running forever. If slurmctld does not answer three times, it
# exits 1: Snakemake stops with "Failed to obtain job status".
set -euo pipefail

jobid=${1:?usage: slurm-status.sh JOBID}
state=""
reached=0
for attempt in 1 2 3; do
  if out=$(timeout 20 scontrol show job --oneliner "$jobid" 2>&1); then
    state=$(grep -o 'JobState=[A-Z_]*' <<<"$out" | head -n1 | cut -d= -f2) || true
    reached=1
    break
  elif grep -qi 'invalid job id' <<<"$out"; then # unknown, or finished more than MinJobAge ago
    reached=1
    break
  fi
  [ "$attempt" = 3 ] || sleep 5
done
if [ "$reached" = 0 ]; then
  echo "slurm-status.sh: slurmctld did not answer for job $jobid: $out" >&2
  exit 1
fi
if [ -z "$state" ]; then
  # "CANCELLED by 123" -> CANCELLED; empty when there is no accounting database
  state=$(timeout 20 sacct -j "$jobid" -X -n -P -o State 2>/dev/null | head -n1 | cut -d' ' -f1) || state=""
fi

case "$state" in
  COMPLETED) echo success ;;
  PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | REQUEUE_FED | REQUEUE_HOLD | \
    RESIZING | SIGNALING | STAGE_OUT | STOPPED | RESV_DEL_HOLD) echo running ;;
  *) echo failed ;; # FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, unknown
esac
