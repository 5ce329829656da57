"""`sparsecl data ...`: download, prepare and split datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(rich_markup_mode=None, help="Download, prepare and split datasets.")
PathArg = Annotated[Path, typer.Option()]
MANUAL_DIR = Path("resources/manual")


def _json_mapping(option: str, text: str, what: str) -> dict:
    """A JSON object given on the command line; anything else is a one-line ConfigError."""
    from ..errors import ConfigError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{option}: expected {what} as JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected {what} as a JSON object, got {text!r}")
    return value


@data_app.command("download")
def data_download(
    source: str,
    file: Annotated[str, typer.Option(help="name of the raw file")],
    out: PathArg,
    sources: Annotated[str, typer.Option(help="the config's data.sources overrides, as JSON")] = "{}",
    manual_dir: PathArg = MANUAL_DIR,
    retries: int = 5,
) -> None:
    """Fetch one raw file of SOURCE (a dataset or `tiny_images`), verify its checksum, resume partial downloads."""
    from .sources import fetch_raw

    fetch_raw(
        source, file, out, _json_mapping("--sources", sources, "the data.sources mapping"), manual_dir, retries=retries
    )


@data_app.command("manual")
def data_manual(manual_dir: PathArg = MANUAL_DIR) -> None:
    """List the files that must be fetched by hand: where to get them, where to put them, whether they are there."""
    from .registry import ManualFile
    from .sources import raw_files, source_names

    for source in source_names():
        for file in raw_files(source):
            if isinstance(file, ManualFile):
                path = manual_dir / file.filename
                state = "present" if path.is_file() else "missing"
                typer.echo(f"{source}: {path} [{state}]: {file.instructions}")


@data_app.command("prepare")
def data_prepare(
    dataset: str,
    raw_dir: PathArg,
    out_dir: PathArg,
    seed: Annotated[int, typer.Option(min=0, help="seed of the dataset's own random choices (>= 0)")] = 0,
) -> None:
    """Turn the raw files of DATASET into the uint8 format (train/test images, labels, meta.json)."""
    from . import get_dataset

    get_dataset(dataset).prepare(raw_dir, out_dir, seed)


@data_app.command("unlabeled")
def data_unlabeled(
    pool: str,
    out_dir: PathArg,
    source: Annotated[Path | None, typer.Option(help="Tiny Images pickle, or prepared CIFAR directory")] = None,
) -> None:
    """Prepare the unlabeled image pool POOL (tiny_images, cifar10, cifar100 or none)."""
    from .unlabeled import prepare_pool

    prepare_pool(pool, source, out_dir)


@data_app.command("scenario")
def data_scenario(
    dataset: str, data_dir: PathArg, spec: Annotated[str, typer.Option(help="scenario spec as JSON")], out: PathArg
) -> None:
    """Write the task split (class order, holdout, chunks, exemplars) of DATASET."""
    from dataclasses import fields

    from ..errors import ConfigError
    from ..scenarios import ScenarioSpec, make_scenario

    known = sorted(f.name for f in fields(ScenarioSpec))
    unknown = sorted(set(_json_mapping("--spec", spec, "a scenario spec")) - set(known))
    if unknown:
        raise ConfigError(f"--spec: unknown key {unknown[0]!r}; expected some of: {', '.join(known)}")
    make_scenario(dataset, data_dir, spec, out)


@data_app.command("synth")
def data_synth(
    source: str,
    out: PathArg,
    train_per_class: int = 2,
    test_per_class: int = 1,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Write a small learnable SOURCE in its real raw format into OUT; print each file's sha256."""
    from .synth import SynthSize, synth

    for name, digest in synth(source, out, SynthSize(train_per_class, test_per_class), seed).items():
        typer.echo(f"{digest}  {name}")
