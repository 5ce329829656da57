"""The `sparsecl` command: one sub-command per workflow rule, every path explicit.

Errors a user can fix (bad config, missing or corrupt data) print one line and exit 1.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from .data.cli import data_app
from .errors import SparseclError

# Plain click errors (no rich panels): a usage error is the usage line and one `Error:` line, exit 2.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, help=__doc__)
app.add_typer(data_app, name="data")

PathArg = Annotated[Path, typer.Option()]
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


def _device(requested: str, threads: int):
    import torch

    from .engine import select_device

    torch.set_num_threads(max(threads, 1))
    return select_device(requested)


@app.command("run-config")
def run_config(
    json_config: Annotated[str, typer.Option("--json", help="resolved run config as JSON")], out: PathArg
) -> None:
    """Write one run's fully resolved configuration."""
    from .config import write_run_config

    write_run_config(json_config, out)


@app.command()
def train(
    config: PathArg,
    data_dir: PathArg,
    scenario: PathArg,
    task: Annotated[int, typer.Option()],
    out_model: PathArg,
    out_masks: PathArg,
    out_log: PathArg,
    resume: PathArg,
    prev_model: Annotated[Path | None, typer.Option()] = None,
    prev_masks: Annotated[Path | None, typer.Option()] = None,
    stage: StageOpt = "train",
    inputs: InputsOpt = None,
    out_eval: Annotated[Path | None, typer.Option(help="evaluate the trained model into this file")] = None,
    eval_masks: Annotated[
        list[Path] | None, typer.Option(help="with --out-eval: masks file of every earlier task, in order")
    ] = None,
    device: str = "auto",
    threads: int = 1,
    config_hash: ConfigHashOpt = None,
) -> None:
    """Train one task (or one stage of it), starting from the previous stage's model and masks;
    with --out-eval, then evaluate it on every seen task in the same process."""
    from .stages import train as train_stage

    train_stage(
        config,
        data_dir,
        scenario,
        task,
        prev_model,
        prev_masks,
        out_model,
        out_masks,
        out_log,
        resume,
        _device(device, threads),
        stage=stage,
        inputs=_named_paths(inputs),
        out_eval=out_eval,
        eval_masks=eval_masks or [],
        config_hash=config_hash,
    )


@app.command()
def evaluate(
    config: PathArg,
    data_dir: PathArg,
    scenario: PathArg,
    task: Annotated[int, typer.Option()],
    model: PathArg,
    masks: Annotated[list[Path], typer.Option(help="masks file of every task 0..TASK, in order")],
    out: PathArg,
    stage: StageOpt = "train",
    inputs: InputsOpt = None,
    device: str = "auto",
    threads: int = 1,
    config_hash: ConfigHashOpt = None,
) -> None:
    """Evaluate the model after TASK (or one of its stages) on every seen task (task-IL and class-IL)."""
    from .stages import evaluate as evaluate_stage

    evaluate_stage(
        config,
        data_dir,
        scenario,
        task,
        model,
        masks,
        out,
        _device(device, threads),
        stage=stage,
        inputs=_named_paths(inputs),
        config_hash=config_hash,
    )


@app.command()
def summarize(
    config: PathArg,
    evals: Annotated[list[Path], typer.Option("--eval", help="eval file of every task, in order")],
    out_metrics: PathArg,
    out_matrix: PathArg,
    out_curves: PathArg,
    config_hash: ConfigHashOpt = None,
) -> None:
    """Accuracy matrix, ACC, BWT, forgetting, learning accuracy and per-task curves of one run."""
    from .summary import summarize as summarize_stage

    summarize_stage(config, evals, out_metrics, out_matrix, out_curves, config_hash)


@app.command()
def report(
    metrics: Annotated[list[Path], typer.Option("--metrics", help="metrics file of every run")],
    matrices: Annotated[list[Path], typer.Option("--matrix", help="accuracy matrix of every run, same order")],
    curves: Annotated[list[Path], typer.Option("--curves", help="per-task curves of every run, same order")],
    ledger: Annotated[str, typer.Option(help="JSON: the reference values and papers' notes of the ledger")],
    tables_dir: PathArg,
    plots_dir: PathArg,
    decimals: Annotated[int, typer.Option(min=0, max=4, help="decimal places of accuracies in the tables")] = 1,
    tolerance: Annotated[float, typer.Option(min=0, help="ledger tolerance, in accuracy points")] = 2.0,
) -> None:
    """Tables (mean ± std over seeds), the reproduction ledger and plots."""
    from .report import build_report

    build_report(metrics, matrices, curves, ledger, tables_dir, plots_dir, decimals=decimals, tolerance=tolerance)


@app.command()
def serve(
    socket_path: Annotated[Path, typer.Option("--socket", help="Unix socket to listen on")],
    idle: Annotated[float, typer.Option(help="seconds without a request before the server exits")] = 600.0,
    parent: Annotated[
        int | None, typer.Option(help="pid the server lives for (default: its parent); it exits when that process does")
    ] = None,
) -> None:
    """Keep one warm process that forks every stage of a local run (the workflow starts it)."""
    from .server import serve as serve_forever

    serve_forever(socket_path, idle, parent)


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
