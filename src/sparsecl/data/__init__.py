"""Dataset registry: each dataset is one module that registers a `DatasetSpec`."""

from .registry import DATASETS, DatasetSpec, get_dataset
from .store import PreparedSplit, load_meta, load_split, write_prepared

# Importing the modules registers the datasets.
from . import digits  # noqa: E402,F401  isort: skip

__all__ = ["DATASETS", "DatasetSpec", "PreparedSplit", "get_dataset", "load_meta", "load_split", "write_prepared"]
