#!/usr/bin/env bash
# Fill .wheels/ (git-ignored) with every wheel the GPU check installs on a machine without a
# package index: run here, in the project's environment, where pip can reach an index.
#
#   bash benchmarks/wheels.sh            # then: carry .wheels with benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .wheels
"${PYTHON:-python3}" benchmarks/wheels.py download .wheels
du -sh .wheels
