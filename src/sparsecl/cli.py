"""The `sparsecl` command: one sub-command per workflow rule, every path explicit.

Errors a user can fix (bad config, missing or corrupt data) print one line and exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .data.cli import data_app
from .errors import SparseclError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(data_app, name="data")

PathArg = Annotated[Path, typer.Option()]
StageOpt = Annotated[str, typer.Option(help="the method's stage this job runs (single-stage methods: train)")]
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
    device: str = "auto",
    threads: int = 1,
) -> None:
    """Train one task (or one stage of it), starting from the previous stage's model and masks."""
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
    )


@app.command()
def summarize(
    config: PathArg,
    evals: Annotated[list[Path], typer.Option("--eval", help="eval file of every task, in order")],
    out_metrics: PathArg,
    out_matrix: PathArg,
    out_curves: PathArg,
) -> None:
    """Accuracy matrix, ACC, BWT, forgetting, learning accuracy and per-task curves of one run."""
    from .summary import summarize as summarize_stage

    summarize_stage(config, evals, out_metrics, out_matrix, out_curves)


@app.command()
def report(
    metrics: Annotated[list[Path], typer.Option("--metrics", help="metrics file of every run")],
    matrices: Annotated[list[Path], typer.Option("--matrix", help="accuracy matrix of every run, same order")],
    reported: Annotated[str, typer.Option(help="JSON: experiment -> point -> paper values")],
    tables_dir: PathArg,
    plots_dir: PathArg,
    decimals: int = 1,
    tolerance: float = 2.0,
) -> None:
    """Tables (mean ± std over seeds), the reproduction ledger and plots."""
    from .report import build_report

    build_report(metrics, matrices, reported, tables_dir, plots_dir, decimals=decimals, tolerance=tolerance)


def main() -> None:
    try:
        app(standalone_mode=False)
    except SparseclError as err:
        print(f"sparsecl: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyError as err:  # registry lookups
        print(f"sparsecl: error: {err.args[0]}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
