"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, no download needed.

1,797 images of 10 classes with values 0..16, rescaled to uint8 0..255. The train/test split is
stratified and seeded (75/25), so it is identical for every user with the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .registry import DATASETS, DatasetSpec
from .store import PreparedSplit, write_prepared

TEST_FRACTION = 0.25


def prepare_digits(raw_dir: Path, out_dir: Path, seed: int, per_class: int | None = None) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    write_prepared(
        out_dir,
        PreparedSplit(images[np.sort(idx_train)], labels[np.sort(idx_train)]),
        PreparedSplit(images[np.sort(idx_test)], labels[np.sort(idx_test)]),
        class_names=[str(c) for c in bunch.target_names],
        sources={"sklearn.datasets.load_digits": "bundled with scikit-learn"},
        extra={"split_seed": seed, "test_fraction": TEST_FRACTION},
        per_class=per_class,
    )


DATASETS.register("digits")(
    DatasetSpec(
        name="digits",
        num_classes=10,
        image_shape=(8, 8, 1),
        prepare=prepare_digits,
        crop_padding=0,  # 8x8 strokes: cropping would cut digits, flipping would change them
        hflip=False,
    )
)
