"""Training throughput: sparsecl's device-resident engine vs a torchvision DataLoader pipeline.

Both feed the same model, batch size, optimiser and augmentation (pad-4 random crop, horizontal
flip, normalise) on the same synthetic CIFAR-shaped uint8 data; the pipelines are described in
`harness.py`. Here neither applies masks (`gpu_check.py` times the sparse step). Run by hand;
paste the printed row into README.md here.

    python benchmarks/throughput.py --device cpu --backbone resnet18 --width 16 --batch-size 64
    python benchmarks/throughput.py --device cuda --backbone resnet18 --width 64 --batch-size 128
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from harness import dataloader, dataloader_runner, device_data, engine_runner, synthetic_cifar, timed

from sparsecl.config import TrainConfig
from sparsecl.engine import make_optimizer, select_device
from sparsecl.engine.device import prepare_model
from sparsecl.models import create_backbone


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
    images, labels = synthetic_cifar(args.images, 10)
    steps = args.images // args.batch_size
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.05)

    def fresh_model():
        torch.manual_seed(0)
        kwargs = {"width": args.width} if args.backbone == "resnet18" else {}
        model = prepare_model(create_backbone(args.backbone, 10, (32, 32, 3), **kwargs), device)
        return model, make_optimizer(model.parameters(), cfg)

    def images_per_second(run) -> float:
        seconds = [timed(run, steps, device) for _ in range(args.epochs + 1)][1:]  # the first epoch warms up
        return steps * args.batch_size / float(np.mean(seconds))

    model, optimizer = fresh_model()
    data = device_data(images, labels, device)
    results = {"sparsecl engine": images_per_second(engine_runner(model, optimizer, data, None, args.batch_size, 10))}
    model, optimizer = fresh_model()
    loader = dataloader(images, labels, args.batch_size, args.workers, device)
    results["DataLoader + PIL"] = images_per_second(
        dataloader_runner(model, optimizer, loader, None, 10, device, "bf16")
    )

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
