#!/usr/bin/env bash
# The GPU path in one command: correctness on CUDA, throughput, the DST update, projections and
# targets, and the workflow on a synthetic CIFAR-100; writes OUTDIR/gpu_check.json and
# OUTDIR/gpu_check.log (benchmarks/README.md, "GPU", says how to run it on a lent machine).
#
#   bash benchmarks/gpu_check.sh OUTDIR              # on a CUDA machine; installs .wheels/ first
#   bash benchmarks/gpu_check.sh OUTDIR --cpu-smoke  # tiny sizes on the CPU, this environment
#   bash benchmarks/gpu_check.sh OUTDIR --rehearsals [NAMES]  # paper configs' rehearsals on CUDA
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash benchmarks/gpu_check.sh OUTDIR [--cpu-smoke | --rehearsals [NAMES]]" >&2; exit 2; }
OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd)
MODE=${2:-}
case "$MODE" in
    "" | --cpu-smoke) ;;
    --rehearsals) MODE="--rehearsals ${3:-focil,lifelong-tickets,multistep,cl-with-dst}" ;;
    *) echo "unknown option: $MODE" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STARTED=$(date +%s)
SCRATCH=$(mktemp -d /tmp/sparsecl-gpu-check.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
PY=$(command -v python3)

check() {
echo "sparsecl GPU check ${MODE:-(gpu)} in $ROOT, python $PY, $(date -u +%FT%TZ)"

if [ "$MODE" != --cpu-smoke ]; then
    # No package index there: install the carried wheels the machine lacks.
    [ -d .wheels ] || { echo "no .wheels/ here: run benchmarks/wheels.sh and carry .wheels" >&2; exit 1; }
    echo "carried wheels: $(du -sh .wheels | cut -f1)"
    "$PY" benchmarks/wheels.py install .wheels --target "$SCRATCH/site" --report "$SCRATCH/setup.json" ||
        echo "wheel installation incomplete: the sections that need those packages will report errors"
    export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
fi
# The project from this tree, and the `sparsecl` command that the workflow's shell rules call.
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$SCRATCH/bin"
printf '#!/bin/sh\nexec "%s" -m sparsecl.cli "$@"\n' "$PY" >"$SCRATCH/bin/sparsecl"
chmod +x "$SCRATCH/bin/sparsecl"
export PATH="$SCRATCH/bin:$PATH"

"$PY" benchmarks/gpu_check.py --out "$OUTDIR" --started "$STARTED" --setup "$SCRATCH/setup.json" $MODE
echo "gpu check finished in $(($(date +%s) - STARTED))s"
}
check 2>&1 | tee "$OUTDIR/gpu_check.log"
