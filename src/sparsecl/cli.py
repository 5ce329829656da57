"""The `sparsecl` command: one sub-command per workflow rule, every path explicit.

Errors a user can fix (bad config, missing or corrupt data) print one line and exit 1.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from .data.cli import data_app
from .errors import SparseclError

if TYPE_CHECKING:  # building the job classes costs start-up: the commands that need them import them
    from .jobs import StageJob

# Plain click errors (no rich panels): a usage error is the usage line and one `Error:` line, exit 2.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, help=__doc__)
app.add_typer(data_app, name="data")
Job = TypeVar("Job", bound="StageJob")


def _path(help_text: str):
    return Annotated[Path, typer.Option(help=help_text)]


def _example(*lines: str) -> str:
    """An epilog showing the command as the workflow runs it (\b keeps click from rewrapping it)."""
    return "Example (as the workflow runs it):\n\n\b\n" + " \\\n".join(
        ["  " + lines[0], *("    " + x for x in lines[1:])]
    )


DeviceOpt = Annotated[str, typer.Option(help="auto (a GPU if there is one), cpu, cuda or cuda:N")]
ThreadsOpt = Annotated[int, typer.Option(min=1, help="CPU threads torch may use (>= 1)")]
ConfigOpt = _path("the run's resolved config.yaml (written by run-config)")
DataDirOpt = _path("the prepared dataset's directory (resources/data/<dataset>)")
ScenarioOpt = _path("the task split of the dataset (resources/scenarios/<dataset>/<id>.json)")
TaskOpt = Annotated[int, typer.Option(help="the task (or data step) to train or evaluate, counted from 0")]
StageOpt = Annotated[str, typer.Option(help="the method's stage this job runs (single-stage methods: train)")]
ConfigHashOpt = Annotated[
    str | None,
    typer.Option(
        help="the hash the workflow config resolves this run's config to; a config file without it is refused"
    ),
]
InputsOpt = Annotated[
    list[str] | None, typer.Option("--input", help="NAME=PATH of a further file the stage reads (repeatable)")
]


def _named_paths(items: list[str] | None) -> dict[str, Path]:
    named = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"expected NAME=PATH, got {item!r}", param_hint="--input")
        named[name] = Path(path)
    return named


def _job(kind: type[Job], options: dict[str, Any]) -> Job:
    """The job `kind` from a command's options, which carry its field names: `--device` and
    `--threads` make the torch device, `--input NAME=PATH` the named inputs, and a repeatable
    path option (None when absent) the tuple of its paths."""
    given = dict(options, inputs=_named_paths(options["inputs"]))
    given["device"] = _device(given["device"], given.pop("threads"))
    for name in ("masks", "eval_masks"):
        if name in given:
            given[name] = tuple(given[name] or ())
    return kind(**given)


def _device(requested: str, threads: int):
    import torch

    from .engine import select_device

    torch.set_num_threads(threads)
    return select_device(requested)


@app.command(
    "run-config",
    epilog=_example(
        'sparsecl run-config --json \'{"experiment": "finetune", ...}\' --out results/runs/finetune/default/seed0/config.yaml'
    ),
)
def run_config(
    json_config: Annotated[str, typer.Option("--json", help="resolved run config as JSON")],
    out: _path("the run's config.yaml to write"),
) -> None:
    """Write one run's fully resolved configuration."""
    from .config import write_run_config

    write_run_config(json_config, out)


@app.command(
    epilog=_example(
        "sparsecl train --config results/runs/finetune/default/seed0/config.yaml --config-hash <hash of its settings>",
        "--scenario resources/scenarios/digits/<id>.json",
        "--task 1 --data-dir resources/data/digits --resume results/resume/finetune/default/seed0/task1.pt",
        "--prev-model results/runs/finetune/default/seed0/task0/model.pt --prev-masks results/runs/finetune/default/seed0/task0/masks.pt",
        "--eval-masks results/runs/finetune/default/seed0/task0/masks.pt --out-model results/runs/finetune/default/seed0/task1/model.pt",
        "--out-masks results/runs/finetune/default/seed0/task1/masks.pt --out-log results/runs/finetune/default/seed0/task1/train_log.parquet",
        "--out-eval results/runs/finetune/default/seed0/task1/eval.parquet --device auto --threads 1",
    )
)
def train(
    config: ConfigOpt,
    data_dir: DataDirOpt,
    scenario: ScenarioOpt,
    task: TaskOpt,
    out_model: _path("the trained model (torch state) to write"),
    out_masks: _path("the task's masks to write (which weights the task owns or uses)"),
    out_log: _path("the training log (parquet, one row per epoch) to write"),
    resume: _path("epoch-level resume state: read if present, written while training, removed at the end"),
    prev_model: Annotated[Path | None, typer.Option(help="the previous task's (or stage's) model")] = None,
    prev_masks: Annotated[Path | None, typer.Option(help="the previous task's (or stage's) masks")] = None,
    stage: StageOpt = "train",
    inputs: InputsOpt = None,
    out_eval: Annotated[Path | None, typer.Option(help="evaluate the trained model into this file")] = None,
    eval_masks: Annotated[
        list[Path] | None, typer.Option(help="with --out-eval: masks file of every earlier task, in order")
    ] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 1,
    config_hash: ConfigHashOpt = None,
) -> None:
    """Train one task (or one stage of it), starting from the previous stage's model and masks;
    with --out-eval, then evaluate it on every seen task in the same process."""
    options = dict(locals())  # first, while the only names are the options
    from .jobs import TrainJob
    from .stages import train as train_stage

    train_stage(_job(TrainJob, options))


@app.command(
    epilog=_example(
        "sparsecl evaluate --config results/runs/multistep/default/seed0/config.yaml --config-hash <hash of its settings>",
        "--data-dir resources/data/digits --scenario resources/scenarios/digits/<id>.json --task 1 --stage sst_msl",
        "--model results/runs/multistep/default/seed0/task1/sst_msl/model.pt",
        "--masks results/runs/multistep/default/seed0/task0/train/masks.pt",
        "--masks results/runs/multistep/default/seed0/task1/sst_msl/masks.pt",
        "--out results/runs/multistep/default/seed0/task1/sst_msl/eval.parquet --device auto --threads 1",
    )
)
def evaluate(
    config: ConfigOpt,
    data_dir: DataDirOpt,
    scenario: ScenarioOpt,
    task: TaskOpt,
    model: _path("the model to evaluate"),
    masks: Annotated[list[Path], typer.Option(help="masks file of every task 0..TASK, in order")],
    out: _path("the evaluation (parquet: accuracy on every seen task, task-IL and class-IL) to write"),
    stage: StageOpt = "train",
    inputs: InputsOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 1,
    config_hash: ConfigHashOpt = None,
) -> None:
    """Evaluate the model after TASK (or one of its stages) on every seen task (task-IL and class-IL)."""
    options = dict(locals())  # first, while the only names are the options
    from .jobs import EvalJob
    from .stages import evaluate as evaluate_stage

    evaluate_stage(_job(EvalJob, options))


@app.command(
    epilog=_example(
        "sparsecl summarize --config results/runs/finetune/default/seed0/config.yaml --config-hash <hash of its settings>",
        "--eval results/runs/finetune/default/seed0/task0/eval.parquet --eval results/runs/finetune/default/seed0/task1/eval.parquet ...",
        "--out-metrics results/runs/finetune/default/seed0/metrics.parquet --out-matrix results/runs/finetune/default/seed0/accuracy_matrix.csv",
        "--out-curves results/runs/finetune/default/seed0/curves.parquet",
    )
)
def summarize(
    config: ConfigOpt,
    evals: Annotated[list[Path], typer.Option("--eval", help="eval file of every task, in order")],
    out_metrics: _path("the run's final metrics (parquet: ACC, BWT, forgetting, LA per setting) to write"),
    out_matrix: _path("the accuracy matrix R[i, j] (CSV, one block per setting) to write"),
    out_curves: _path("the per-task curves (parquet: accuracy and method columns after each task) to write"),
    config_hash: ConfigHashOpt = None,
) -> None:
    """Accuracy matrix, ACC, BWT, forgetting, learning accuracy and per-task curves of one run."""
    from .summary import summarize as summarize_stage

    summarize_stage(config, evals, out_metrics, out_matrix, out_curves, config_hash)


@app.command(
    epilog=_example(
        "sparsecl report --metrics results/runs/finetune/default/seed0/metrics.parquet ...",
        "--matrix results/runs/finetune/default/seed0/accuracy_matrix.csv ...",
        "--curves results/runs/finetune/default/seed0/curves.parquet ...",
        '--ledger \'{"entries": [...], "papers": {...}}\' --tables-dir results/tables',
        "--plots-dir results/plots --decimals 1 --tolerance 2.0",
    )
)
def report(
    metrics: Annotated[list[Path], typer.Option("--metrics", help="metrics file of every run")],
    matrices: Annotated[list[Path], typer.Option("--matrix", help="accuracy matrix of every run, same order")],
    curves: Annotated[list[Path], typer.Option("--curves", help="per-task curves of every run, same order")],
    ledger: Annotated[str, typer.Option(help="JSON: the reference values and papers' notes of the ledger")],
    tables_dir: _path("where summary.{md,html,csv,parquet} and reproduction.{md,html,csv} go"),
    plots_dir: _path("where the comparison, per-experiment and ledger plots go"),
    decimals: Annotated[int, typer.Option(min=0, max=4, help="decimal places of accuracies in the tables")] = 1,
    tolerance: Annotated[float, typer.Option(min=0, help="ledger tolerance, in accuracy points")] = 2.0,
) -> None:
    """Tables (mean ± std over seeds), the reproduction ledger and plots."""
    from .report import build_report

    build_report(metrics, matrices, curves, ledger, tables_dir, plots_dir, decimals=decimals, tolerance=tolerance)


@app.command(epilog=_example("sparsecl serve --socket .snakemake/sparsecl-stages.sock --idle 600"))
def serve(
    socket_path: Annotated[Path, typer.Option("--socket", help="Unix socket to listen on")],
    idle: Annotated[
        float, typer.Option(min=1, help="seconds without a request before the server exits (>= 1)")
    ] = 600.0,
    parent: Annotated[
        int | None, typer.Option(help="pid the server lives for (default: its parent); it exits when that process does")
    ] = None,
) -> None:
    """Keep one warm process that forks every stage of a local run (the workflow starts it)."""
    from .server import serve as serve_forever

    serve_forever(main, socket_path, idle, parent)


def _one_line(message: str) -> str:
    """The message as one line, even where it quotes a library's multi-line exception text."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def main() -> None:
    """Run the CLI: usage errors print click's usage and exit 2; a user error is one line and exit 1;
    anything else is one `internal error` line (the traceback goes first, into the job's log)."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    try:
        app(prog_name="sparsecl")  # standalone: click answers usage errors itself (message, exit 2)
    except SparseclError as err:
        print(f"sparsecl: error: {_one_line(str(err))}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # the disk, permissions, a path that is a file: say which
        where = f"{err.filename}: " if err.filename else ""
        print(f"sparsecl: error: {where}{err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:
        if not sys.stderr.isatty():  # a job's log keeps the whole story
            traceback.print_exc(file=sys.stderr)
        print(f"sparsecl {command}: internal error: {type(err).__name__}: {err}".rstrip(), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
