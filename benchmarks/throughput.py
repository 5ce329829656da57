"""Training throughput: sparsecl's device-resident engine vs a torchvision DataLoader pipeline.

Both feed the same model, batch size, optimiser and augmentation (pad-4 random crop, horizontal
flip, normalise) on the same synthetic CIFAR-shaped uint8 data. The baseline does what the
upstream codes do: a torchvision Dataset whose per-sample PIL transforms run in DataLoader
workers, then a host-to-device copy. Run by hand; paste the printed row into README.md here.

    python benchmarks/throughput.py --device cpu --backbone resnet18 --width 16 --batch-size 64
    python benchmarks/throughput.py --device cuda --backbone resnet18 --width 64 --batch-size 128
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from sparsecl.config import TrainConfig
from sparsecl.engine import DeviceData, make_optimizer, select_device, train_epoch
from sparsecl.engine.device import prepare_model
from sparsecl.engine.loop import sliced_cross_entropy
from sparsecl.models import create_backbone

MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


class UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def dataloader_epoch(model, optimizer, loader, device, loss_fn) -> tuple[int, float]:
    model.train()
    start, seen = time.perf_counter(), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss, _ = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    args = parser.parse_args()

    device = select_device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.05)
    loss_fn = sliced_cross_entropy(0, 10)

    def fresh_model():
        torch.manual_seed(0)
        kwargs = {"width": args.width} if args.backbone == "resnet18" else {}
        model = prepare_model(create_backbone(args.backbone, 10, (32, 32, 3), **kwargs), device)
        return model, make_optimizer(model.parameters(), cfg)

    results = {}
    # sparsecl engine: whole dataset on the device, batched augmentation there
    model, optimizer = fresh_model()
    data = DeviceData.from_numpy(images, labels, MEAN, STD, device, crop_padding=4, hflip=True)
    generator = torch.Generator(device=device).manual_seed(0)
    idx = torch.arange(args.images, device=device)
    rates = []
    for epoch in range(args.epochs + 1):
        stats = train_epoch(
            model,
            optimizer,
            data,
            idx,
            epoch=epoch,
            batch_size=args.batch_size,
            generator=generator,
            augment=True,
            loss_fn=loss_fn,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            rates.append(stats.images_per_second)
    results["sparsecl engine"] = float(np.mean(rates))

    # baseline: torchvision Dataset + DataLoader with per-sample PIL transforms
    model, optimizer = fresh_model()
    loader = torch.utils.data.DataLoader(
        UInt8Dataset(images, labels), batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    rates = []
    for epoch in range(args.epochs + 1):
        seen, seconds = dataloader_epoch(model, optimizer, loader, device, loss_fn)
        if epoch:
            rates.append(seen / seconds)
    results["DataLoader + PIL"] = float(np.mean(rates))

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}; torch {torch.__version__}; {args.backbone} width {args.width}; batch {args.batch_size}; {args.workers} workers"
    )
    print("| pipeline | train img/s |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value:,.0f} |")
    print(f"speed-up: {results['sparsecl engine'] / results['DataLoader + PIL']:.2f}x")


if __name__ == "__main__":
    main()
