"""Resume files: a killed training job continues from its last finished epoch (or search trial),
but only under the run config and code it was started with. A resume file made under another
`lr`, another code version, or for another run, task or stage is discarded with a log line, and
the job starts afresh."""

from __future__ import annotations

from functools import cache
from typing import Any

from ..errors import DataError
from ..fingerprint import fingerprint, registered_module
from ..io import config_hash, load_torch, save_torch
from .base import TaskContext

STAMP = "made_under"
_WHAT = {"config_hash": "run config", "code": "code version", "run_id": "run", "task": "task", "stage": "stage"}


@cache
def _code(method: str, backbone: str, dataset: str) -> str:
    """The code a job runs (as the workflow's code trigger sees it)."""
    modules = ("sparsecl.stages", *(registered_module(k, n) for k, n in
               (("method", method), ("backbone", backbone), ("dataset", dataset))))  # fmt: skip
    return fingerprint(modules)


def resume_stamp(ctx: TaskContext) -> dict[str, Any]:
    run = ctx.run
    return {
        "config_hash": config_hash(run.to_dict()),
        "code": _code(run.method, run.backbone, run.dataset),
        "run_id": run.run_id,
        "task": ctx.task,
        "stage": ctx.stage,
    }


def save_resume(ctx: TaskContext, state: dict[str, Any]) -> None:
    save_torch(ctx.resume_path, {**state, STAMP: resume_stamp(ctx)})


def load_resume(ctx: TaskContext, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The job's resume state, or None to start afresh (no file, or one made under something else)."""
    path = ctx.resume_path
    if not path.exists():
        return None
    saved = load_torch(path, map_location=ctx.device)
    if not isinstance(saved, dict):
        raise DataError(f"{path}: not a resume file (expected a mapping); delete it to start the task afresh")
    stamp, expected = saved.pop(STAMP, None), resume_stamp(ctx)
    if stamp != expected:
        changed = [w for k, w in _WHAT.items() if not isinstance(stamp, dict) or stamp.get(k) != expected[k]]
        ctx.log(f"discarded {path}: it was made under another {', '.join(changed)}; the task starts afresh")
        path.unlink()
        return None
    missing = [key for key in keys if key not in saved]
    if missing:
        raise DataError(f"{path}: resume file without {missing[0]!r}; delete it to start the task afresh")
    return saved
