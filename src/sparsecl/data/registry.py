"""What a dataset is to the pipeline: its shape, class count, augmentation policy and preparer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..registry import Registry


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset's upstream distribution, with its published checksum."""

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ManualFile:
    """A file the user must fetch by hand (login, licence) and place under resources/manual/."""

    filename: str
    instructions: str  # where to get it, in one sentence (no published checksum exists)


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset plus the function that turns raw files into the uint8 format.

    `prepare(raw_dir, out_dir, seed, per_class=None)` reads the downloaded (or manual) files in
    `raw_dir` and writes `out_dir/{train,test}/{images,labels}.npy` and `out_dir/meta.json` via
    `write_prepared` (at most `per_class` images of each class per split, if given).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C
    prepare: Callable[..., None]
    crop_padding: int = 4  # pad-and-random-crop augmentation; 0 disables it
    hflip: bool = True
    files: tuple[RemoteFile, ...] = ()  # downloaded by the download rule; empty: built in or manual
    manual: ManualFile | None = None  # a file the user must place under resources/manual/
    mean: tuple[float, ...] | None = None  # published normalisation constants; None: computed from train
    std: tuple[float, ...] | None = None
    notes: dict = field(default_factory=dict)

    @property
    def needs_download(self) -> bool:
        return bool(self.files)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)
