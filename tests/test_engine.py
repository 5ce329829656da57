"""The device-resident data engine (batching, augmentation, reproducibility) and the optimiser factory."""

import subprocess
import sys

import numpy as np
import torch

from sparsecl.engine import DeviceData

CPU = torch.device("cpu")


def make_data(n=32, crop_padding=4, hflip=True):
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (n, 8, 8, 3), dtype=np.uint8)  # no zero pixels: padding is visible
    labels = np.arange(n) % 4
    return images, DeviceData.from_numpy(
        images, labels, (0.0,) * 3, (1.0,) * 3, CPU, crop_padding=crop_padding, hflip=hflip
    )


def test_batches_without_augmentation_return_the_normalised_pixels_in_order():
    images, data = make_data()
    x, y = next(data.batches(torch.arange(5), 5))
    expected = torch.from_numpy(images[:5]).permute(0, 3, 1, 2).float() / 255.0
    torch.testing.assert_close(x, expected)
    assert y.tolist() == [0, 1, 2, 3, 0]


def test_shuffled_batches_cover_every_index_exactly_once():
    _, data = make_data(n=30)
    generator = torch.Generator().manual_seed(1)
    labels = torch.cat([y for _, y in data.batches(torch.arange(30), 7, generator, shuffle=True)])
    assert len(labels) == 30
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())


def test_augmentation_is_a_shifted_crop_or_its_mirror_image():
    images, data = make_data(n=16)
    generator = torch.Generator().manual_seed(0)
    x, _ = data.batch(torch.arange(16), generator, augment=True)
    x = (x * 255).round().to(torch.uint8)
    for i in range(16):
        padded = torch.nn.functional.pad(torch.from_numpy(images[i]).permute(2, 0, 1), (4, 4, 4, 4))
        crops = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(x[i], c) or torch.equal(x[i], c.flip(2)) for c in crops)


def test_augmentation_is_reproducible_from_the_generator_seed():
    _, data = make_data()
    idx = torch.arange(32)
    first, _ = data.batch(idx, torch.Generator().manual_seed(3), augment=True)
    again, _ = data.batch(idx, torch.Generator().manual_seed(3), augment=True)
    other, _ = data.batch(idx, torch.Generator().manual_seed(4), augment=True)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_dataset_without_crop_or_flip_is_never_altered():
    images, data = make_data(crop_padding=0, hflip=False)
    x, _ = data.batch(torch.arange(4), torch.Generator().manual_seed(0), augment=True)
    torch.testing.assert_close(x, torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255.0)


def test_indices_of_selects_labels_within_a_subset():
    _, data = make_data(n=12)  # labels 0,1,2,3,0,1,...
    assert data.indices_of([1, 3]).tolist() == [1, 3, 5, 7, 9, 11]
    assert data.indices_of([1, 3], subset=np.array([0, 1, 2, 3])).tolist() == [1, 3]


def test_single_channel_images_get_standard_strides_so_cpu_conv_backward_is_safe():
    images = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8, 1)
    data = DeviceData.from_numpy(images, np.zeros(3), [0.5], [0.25], torch.device("cpu"))
    x, _ = data.batch(torch.tensor([2, 0]))
    assert data.images.stride() == (64, 64, 8, 1) and x.stride() == (64, 64, 8, 1)
    torch.nn.Conv2d(1, 2, 3, padding=1)(x).sum().backward()  # corrupted memory on (64, 1, 8, 1) strides


def test_a_job_forked_from_the_warm_server_imports_nothing_on_its_first_training_step():
    """What torch loads lazily (its compiler stack, as long as importing torch) is paid once by the
    server, not by every job."""
    script = (
        "import sys, torch\n"
        "from sparsecl import server\n"
        "from sparsecl.config import TrainConfig\n"
        "from sparsecl.engine import make_optimizer, seed_everything\n"
        "server._warm_up()\n"
        "before = set(sys.modules)\n"
        "seed_everything(0, torch.device('cpu'))\n"
        "model = torch.nn.Linear(3, 2)\n"
        "for name in ('sgd', 'adam'):\n"
        "    optimizer = make_optimizer(model.parameters(), TrainConfig(optimizer=name, momentum=0.9))\n"
        "    model(torch.ones(1, 3)).sum().backward()\n"
        "    optimizer.step(); optimizer.zero_grad(); optimizer.load_state_dict(optimizer.state_dict())\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
