"""`sparsecl data ...`: download, prepare and split datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(rich_markup_mode=None, help="Download, prepare and split datasets.")
MANUAL_DIR = Path("resources/manual")


def _path(help_text: str):
    return Annotated[Path, typer.Option(help=help_text)]


def _example(line: str) -> str:
    """An epilog showing the command as the workflow runs it (\b keeps click from rewrapping it)."""
    return f"Example (as the workflow runs it):\n\n\b\n  {line}"


ManualDirOpt = _path("where files fetched by hand are put (see `sparsecl data manual`)")


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


@data_app.command(
    "download",
    epilog=_example("sparsecl data download cifar100 --file cifar-100-python.tar.gz"
                    " --out resources/raw/cifar100/cifar-100-python.tar.gz --sources '{}'"),
)  # fmt: skip
def data_download(
    source: Annotated[str, typer.Argument(help="a dataset (e.g. cifar100) or tiny_images")],
    file: Annotated[str, typer.Option(help="name of the raw file")],
    out: _path("where the verified raw file goes"),
    sources: Annotated[str, typer.Option(help="the config's data.sources overrides, as JSON")] = "{}",
    manual_dir: ManualDirOpt = MANUAL_DIR,
    retries: Annotated[
        int, typer.Option(min=0, help="retries of a failing download after its first attempt (>= 0)")
    ] = 5,
) -> None:
    """Fetch one raw file of SOURCE (a dataset or `tiny_images`), verify its checksum, resume partial downloads."""
    from .sources import fetch_raw

    fetch_raw(
        source, file, out, _json_mapping("--sources", sources, "the data.sources mapping"), manual_dir, retries=retries
    )


@data_app.command("manual", epilog="Example:\n\n\b\n  sparsecl data manual --manual-dir resources/manual")
def data_manual(manual_dir: ManualDirOpt = MANUAL_DIR) -> None:
    """List the files that must be fetched by hand: where to get them, where to put them, whether they are there."""
    from .registry import ManualFile
    from .sources import raw_files, source_names

    for source in source_names():
        for file in raw_files(source):
            if isinstance(file, ManualFile):
                path = manual_dir / file.filename
                state = "present" if path.is_file() else "missing"
                typer.echo(f"{source}: {path} [{state}]: {file.instructions}")


@data_app.command(
    "prepare",
    epilog=_example(
        "sparsecl data prepare digits --raw-dir resources/raw/digits --out-dir resources/data/digits --seed 0"
    ),
)
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="the dataset to prepare (e.g. digits, cifar100)")],
    raw_dir: _path("the dataset's downloaded raw files"),
    out_dir: _path("where the prepared dataset goes"),
    seed: Annotated[int, typer.Option(min=0, help="seed of the dataset's own random choices (>= 0)")] = 0,
    per_class: Annotated[
        int | None,
        typer.Option(min=1, help="keep at most this many images per class in each split (a rehearsal's cap)"),
    ] = None,
) -> None:
    """Turn the raw files of DATASET into the uint8 format (train/test images, labels, meta.json)."""
    from . import get_dataset

    get_dataset(dataset).prepare(raw_dir, out_dir, seed, per_class)


@data_app.command(
    "unlabeled",
    epilog=_example(
        "sparsecl data unlabeled cifar10 --source resources/data/cifar10 --out-dir resources/data/unlabeled/cifar10"
    ),
)
def data_unlabeled(
    pool: Annotated[str, typer.Argument(help="tiny_images, cifar10, cifar100 or none")],
    out_dir: _path("where pool.npy and meta.json go"),
    source: Annotated[Path | None, typer.Option(help="Tiny Images pickle, or prepared CIFAR directory")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="keep at most this many images, the first ones (a rehearsal's cap)")
    ] = None,
) -> None:
    """Prepare the unlabeled image pool POOL (tiny_images, cifar10, cifar100 or none)."""
    from .unlabeled import prepare_pool

    prepare_pool(pool, source, out_dir, limit)


@data_app.command(
    "scenario",
    epilog=_example(
        "sparsecl data scenario digits --data-dir resources/data/digits"
        """ --spec '{"kind": "class", "num_tasks": 5, ...}' --out resources/scenarios/digits/<id>.json"""
    ),
)
def data_scenario(
    dataset: Annotated[str, typer.Argument(help="the prepared dataset to split")],
    data_dir: _path("the prepared dataset's directory"),
    spec: Annotated[str, typer.Option(help="scenario spec as JSON")],
    out: _path("the task split (JSON) to write"),
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


@data_app.command("synth", epilog=_example("sparsecl data synth cifar100 --out resources/synth/cifar100"))
def data_synth(
    source: Annotated[str, typer.Argument(help="the dataset (or tiny_images) whose raw format to imitate")],
    out: _path("where the synthetic raw files go"),
    train_per_class: Annotated[int, typer.Option(min=1, help="training images per class (>= 1)")] = 2,
    test_per_class: Annotated[int, typer.Option(min=1, help="test images per class (>= 1)")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="seed of the synthetic images (>= 0)")] = 0,
) -> None:
    """Write a small learnable SOURCE in its real raw format into OUT; print each file's sha256."""
    from .synth import SynthSize, synth

    for name, digest in synth(source, out, SynthSize(train_per_class, test_per_class), seed).items():
        typer.echo(f"{digest}  {name}")
