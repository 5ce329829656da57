#!/usr/bin/env bash
# start-slurm.sh - a throwaway single-node SLURM cluster for the cluster tests.
#
# Installs what is missing (apt: munge, slurmctld, slurmd, slurm-client), writes
# /etc/slurm/{slurm,gres}.conf, starts munged (unless one already works),
# slurmctld and slurmd, and waits until the node accepts jobs. Debian/Ubuntu,
# root, no systemd or cgroups needed. Idempotent: when the cluster it started
# is up, it only says so. Stop it with stop-slurm.sh (which stops only what this
# script started, by the PIDs recorded in $RUN_DIR).
#
# The cluster: one node "localhost" (127.0.0.1, whatever the hostname), one
# default partition "debug", no accounting database (use the squeue status
# mode), and fake GPUs: gres/gpu of type "fake" backed by character devices, so
# `--gpus=N`, `--gpus=fake:N` and `--gres=gpu:N` schedule and set
# CUDA_VISIBLE_DEVICES. There is no GPU behind them.
#
# Environment (optional):
#   SLURM_FAKE_GPUS  fake GPUs on the node (default 2; 0 = none)
#   SLURM_RUN_DIR    PIDs of started daemons + fake GPU devices (default /run/sparsecl-slurm)
set -euo pipefail

FAKE_GPUS=${SLURM_FAKE_GPUS:-2}
RUN_DIR=${SLURM_RUN_DIR:-/run/sparsecl-slurm}
CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/sparsecl-slurm   # slurmctld state + slurmd spool
LOG_DIR=/var/log/sparsecl-slurm
NODE=localhost
MARKER="# sparsecl throwaway test cluster (tests/slurm/start-slurm.sh)"

say() { echo "[start-slurm $(date +%T)] $*"; }
fail() { say "ERROR: $*" >&2; exit 1; }

# until_ok SECONDS WHAT CMD...: poll CMD every 0.5 s; fail after SECONDS
until_ok() {
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  fail "no $what after ${secs}s (logs: $LOG_DIR)"
}
alive() { # alive NAME: the daemon recorded as NAME runs
  local pid
  pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
node_state() { sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root"
command -v apt-get >/dev/null || fail "needs apt-get (Debian/Ubuntu)"

# ------------------------------------------------------------------ packages
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
  command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # without systemd the packages' postinst cannot start services; we start them below
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$RUN_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$LOG_DIR" "$CONF_DIR"

# ------------------------------------------------------------------ already up?
if alive slurmctld && alive slurmd; then
  case "$(node_state)" in
    idle* | mixed* | allocated* | completing*)
      say "already running (PIDs in $RUN_DIR)"
      exit 0
      ;;
  esac
fi

# ------------------------------------------------------------------ config
if [ -e "$CONF_DIR/slurm.conf" ] && ! grep -qxF "$MARKER" "$CONF_DIR/slurm.conf"; then
  fail "$CONF_DIR/slurm.conf exists and was not written by this script; not touching a real cluster"
fi

# The node's geometry as slurmd detects it, so slurmd registers without complaints.
hw=$(slurmd -C | head -n1)
hwval() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $hw"; }
mem=$(hwval RealMemory)
node_line="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(hwval CPUs) Boards=$(hwval Boards)"
node_line+=" SocketsPerBoard=$(hwval SocketsPerBoard) CoresPerSocket=$(hwval CoresPerSocket)"
node_line+=" ThreadsPerCore=$(hwval ThreadsPerCore) RealMemory=$((mem * 85 / 100))"

# Fake GPUs. slurmd drops a gpu GRES without File=, and wants File= to be a
# character device: clone /dev/null (char 1:3) once per GPU. If mknod is not
# permitted (some containers), /dev/null itself is the only fake GPU.
gres_conf="AutoDetect=off"
if [ "$FAKE_GPUS" -gt 0 ]; then
  devs=()
  for ((i = 0; i < FAKE_GPUS; i++)); do
    dev=$RUN_DIR/fakegpu$i
    if [ -c "$dev" ] || mknod -m 666 "$dev" c 1 3 2>/dev/null; then devs+=("$dev"); else break; fi
  done
  if [ ${#devs[@]} -ne "$FAKE_GPUS" ]; then
    say "mknod not permitted: one fake GPU on /dev/null"
    FAKE_GPUS=1 devs=(/dev/null)
  fi
  node_line+=" Gres=gpu:fake:$FAKE_GPUS"
  gres_conf+=$'\n'"NodeName=$NODE Name=gpu Type=fake File=$(IFS=,; echo "${devs[*]}")"
fi

cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
ClusterName=sparsecl-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups on a CI machine: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database: sacct does not work, squeue does.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Without a default, a job without --mem gets the whole node and jobs run one at a time.
DefMemPerCPU=500
# Keep finished jobs visible to squeue/scontrol for 10 min: the snakemake slurm
# plugin's squeue status mode needs MinJobAge >= 3 x its first status delay, and
# the tests read the allocations of finished jobs with scontrol.
MinJobAge=600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MpiDefault=none
SwitchType=switch/none
GresTypes=gpu
$node_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
printf '%s\n' "$gres_conf" >"$CONF_DIR/gres.conf"

# ------------------------------------------------------------------ munged
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged already running (not started here, will not be stopped)"
else
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG_DIR/munged.out" 2>&1
  until_ok 10 "munge credentials" sh -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$RUN_DIR/munged.pid"
  say "munged started (pid $(cat "$RUN_DIR/munged.pid"))"
fi

# ------------------------------------------------------------------ slurmctld
if alive slurmctld; then
  scontrol reconfigure
elif scontrol ping 2>/dev/null | grep -q 'is UP'; then
  fail "a slurmctld not started by this script answers on this machine; stop it first"
else
  rm -f "$RUN_DIR/slurmctld.pid"
  /usr/sbin/slurmctld </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1
  until_ok 30 "slurmctld answering" sh -c 'scontrol ping | grep -q "is UP"'
  say "slurmctld started (pid $(cat "$RUN_DIR/slurmctld.pid"))"
fi

# ------------------------------------------------------------------ slurmd
if alive slurmd; then # restart it so that it re-reads gres.conf
  kill "$(cat "$RUN_DIR/slurmd.pid")"
  until_ok 15 "old slurmd exit" sh -c "! kill -0 $(cat "$RUN_DIR/slurmd.pid")"
fi
rm -f "$RUN_DIR/slurmd.pid"
# -N: the node is "localhost" in slurm.conf whatever this machine's hostname is
/usr/sbin/slurmd -N "$NODE" </dev/null >>"$LOG_DIR/slurmd.out" 2>&1
until_ok 15 "slurmd pid file" test -s "$RUN_DIR/slurmd.pid"
say "slurmd started (pid $(cat "$RUN_DIR/slurmd.pid"))"

# ------------------------------------------------------------------ node ready
node_ready() {
  case "$(node_state)" in
    idle* | mixed* | allocated*) return 0 ;;
    # a failed earlier registration (kept in slurmctld's state) leaves it drained
    drain* | down* | inval* | fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null ;;
  esac
  return 1
}
until_ok 60 "idle node $NODE" node_ready
say "cluster up: $(sinfo --noheader --format='partition %P, %D node(s) %T, gres %G')"
