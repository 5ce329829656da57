"""Where a config's outputs live: each config its own results root, rehearsals apart from real data.

Torch-free: the workflow imports it while planning.

- the embedded default (no `name`) writes under `results/`;
- a config with `name: <slug>` (every paper config has one) writes under `results/<slug>/`, so a
  paper's summary, ledger, plots and report never mix with the demo's or another paper's;
- a rehearsal (`rehearse: true`) writes under `results/rehearsal/<slug>/` and keeps its synthetic
  data in `resources/rehearsal/`, so neither its numbers nor its fake datasets can be taken for real.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RESULTS = "results"
RESOURCES = "resources"
REHEARSAL = "rehearsal"
# The first line of a rehearsal's tables and ledger.
NOTICE = (
    "REHEARSAL: synthetic data, 1 epoch, 1 seed, a covering subset of the grid."
    " These numbers are a rehearsal of the pipeline and mean nothing."
)

# Names a results root may not take: they are folders of the default root itself.
RESERVED_NAMES = frozenset({"runs", "tables", "plots", "logs", "benchmarks", "resume", REHEARSAL})


def is_rehearsal(config: Mapping) -> bool:
    """`rehearse` as YAML gives it or as `--config rehearse=true` does (a string)."""
    return config.get("rehearse", False) in (True, "true")


def results_root(config: Mapping) -> str:
    """The folder every result of this config goes under."""
    base = f"{RESULTS}/{REHEARSAL}" if is_rehearsal(config) else RESULTS
    name = config.get("name")
    if name:
        return f"{base}/{name}"
    return f"{base}/default" if is_rehearsal(config) else base


def resources_root(config: Mapping) -> str:
    """Downloaded and prepared data: shared by every real config, apart for rehearsals."""
    return f"{RESOURCES}/{REHEARSAL}" if is_rehearsal(config) else RESOURCES


def unwritable(*paths: str) -> str | None:
    """The first of `paths` that exists but is not a directory this process may write in, if any:
    a results or resources path that is a file stops the run in one line before Snakemake's own
    directory scan fails on it."""
    for path in paths:
        if os.path.exists(path) and not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
            return path
    return None
