"""One seed-stream function for every method, so that no two random streams of a run coincide."""

from __future__ import annotations

import numpy as np


def seed_stream(seed: int, task: int, purpose: int, *more: int) -> int:
    """A reproducible seed for (run seed, task, purpose, *more); any differing part gives an independent stream.

    Methods choose distinct `purpose` numbers per stream and add what else tells draws apart
    (a trial, a stage).
    """
    return int(np.random.SeedSequence([seed, task, purpose, *more]).generate_state(1)[0])
