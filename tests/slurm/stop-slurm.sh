#!/usr/bin/env bash
# stop-slurm.sh - stop the test cluster of start-slurm.sh.
#
# Cancels the jobs still queued, then stops the daemons start-slurm.sh started,
# by the PIDs it recorded in $SLURM_RUN_DIR (default /run/sparsecl-slurm), after
# checking that each PID still is that daemon. Daemons it did not start (e.g. a
# munged that was already running) are left alone.
#   stop-slurm.sh           stop the daemons, keep config, state and logs
#   stop-slurm.sh --purge   also remove config, state, logs and fake GPU devices
#                           (the apt packages stay installed)
set -euo pipefail

RUN_DIR=${SLURM_RUN_DIR:-/run/sparsecl-slurm}
purge=0
case "${1:-}" in
  "") ;;
  --purge) purge=1 ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
say() { echo "[stop-slurm $(date +%T)] $*"; }

recorded() { # recorded NAME COMM: the PID recorded as NAME, if it still runs COMM
  local pid
  pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

# Cancel leftover jobs first, so that their processes end with them.
if recorded slurmctld slurmctld >/dev/null; then
  jobs=$(timeout 10 squeue --noheader --format=%i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    say "cancelling jobs: ${jobs//$'\n'/ }"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs || true
    for _ in $(seq 20); do
      [ -z "$(timeout 5 squeue --noheader --states=PENDING,RUNNING,COMPLETING --format=%i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi

stop() { # stop NAME COMM: SIGTERM, then SIGKILL after 15 s
  local pid
  if pid=$(recorded "$1" "$2"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$1 ($pid) ignored SIGTERM, sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
    say "stopped $1 ($pid)"
  elif [ -e "$RUN_DIR/$1.pid" ]; then
    say "$1 was not running"
  fi
  rm -f "$RUN_DIR/$1.pid"
}
# reverse order of start
stop slurmd slurmd
stop slurmctld slurmctld
stop munged munged

if [ "$purge" = 1 ]; then
  conf=/etc/slurm/slurm.conf
  if [ -e "$conf" ] && grep -q '^# sparsecl throwaway test cluster' "$conf"; then
    rm -f "$conf" /etc/slurm/gres.conf
  fi
  rm -rf /var/lib/sparsecl-slurm /var/log/sparsecl-slurm "$RUN_DIR"
  say "purged config, state, logs and fake GPU devices"
fi
