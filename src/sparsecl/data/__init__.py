"""Dataset registry: each dataset is one module of this package that registers a `DatasetSpec`."""

from ..registry import import_submodules
from .registry import DATASETS, DatasetSpec, RemoteFile, get_dataset
from .store import PreparedSplit, load_meta, load_split, write_prepared

import_submodules(__name__, __path__, skip=("cli",))  # the CLI is not a dataset

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "PreparedSplit",
    "RemoteFile",
    "get_dataset",
    "load_meta",
    "load_split",
    "write_prepared",
]
