"""`sparsecl data ...`: download, prepare and split datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(no_args_is_help=True, help="Download, prepare and split datasets.")
PathArg = Annotated[Path, typer.Option()]


@data_app.command("prepare")
def data_prepare(dataset: str, raw_dir: PathArg, out_dir: PathArg, seed: int = 0) -> None:
    """Turn the raw files of DATASET into the uint8 format (train/test images, labels, meta.json)."""
    from . import get_dataset

    get_dataset(dataset).prepare(raw_dir, out_dir, seed)


@data_app.command("scenario")
def data_scenario(dataset: str, data_dir: PathArg, spec: Annotated[str, typer.Option(help="scenario spec as JSON")], out: PathArg) -> None:
    """Write the task split (class order, holdout, chunks, exemplars) of DATASET."""
    from ..stages import make_scenario

    make_scenario(dataset, data_dir, spec, out)
