"""The GPU path: what CUDA changes (bf16 autocast, channels_last, device-side random streams and
augmentation, kernel nondeterminism) must not change what the methods guarantee.

Specification, on CUDA (`pytest -m gpu`; skipped without a GPU): earlier tasks' weights and
ownership stay bit-identical through later tasks trained under bf16 (dst and focil); a run's
masks are the CPU run's masks for the same seed; DST updates keep the density; a task killed and
resumed ends with the uninterrupted run's weights (with deterministic kernels, bit for bit); the
training loop never waits for the device; channels_last predicts what the default layout does
(exactly in fp32; under bf16 as far from fp32 as the default layout). `SPARSECL_GPU_TESTS_ON_CPU=1`
runs the same tests on the CPU, which checks the tests themselves where no GPU is at hand (the
CUDA-only comparisons then compare the CPU with itself). The unmarked tests hold on any device;
the slow one runs `gpu_check.sh --cpu-smoke`, whose correctness section runs the quick ones so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sparsecl import stages
from sparsecl.config import RunConfig, TrainConfig, dump_run_config
from sparsecl.data import get_dataset
from sparsecl.data.synth import write_cifar100
from sparsecl.engine import DeviceData, autocast, train_epoch
from sparsecl.engine.device import prepare_model
from sparsecl.engine.loop import sliced_cross_entropy
from sparsecl.io import load_torch, read_parquet_provenance, write_text
from sparsecl.models import create_backbone
from sparsecl.scenarios import ScenarioSpec, make_scenario
from sparsecl.sparse import layer_densities, maskable_parameters, random_masks
from sparsecl.sparse.dst import grow
from sparsecl.sparse.masks import FREE, apply_masks, mask_factors
from sparsecl.sparse.trainer import DSTSchedule, SparseTrainer

from .stage_helpers import evaluate_task, kill_in_epoch, train_task

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
ON_CPU = os.environ.get("SPARSECL_GPU_TESTS_ON_CPU") == "1"
DEVICE = torch.device("cuda") if torch.cuda.is_available() else CPU


def on_gpu(test):
    """Mark a test `gpu`; it is skipped without CUDA unless SPARSECL_GPU_TESTS_ON_CPU=1."""
    needs = pytest.mark.skipif(not torch.cuda.is_available() and not ON_CPU, reason="needs a CUDA GPU")
    return pytest.mark.gpu(needs(test))


SCENARIO = ScenarioSpec(num_tasks=2, classes_per_task=5)
DST_TRAIN = TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=0.003, loss_scope="task")
DST_ARGS = {"density": 0.2, "init": "ERK", "growth": "momentum", "update_frequency": 2}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic CIFAR-100 (8 training, 4 test images per class), prepared, and its 2-task scenario."""
    root = tmp_path_factory.mktemp("cifar100")
    (root / "raw").mkdir()
    write_cifar100(root / "raw" / "cifar-100-python.tar.gz", train_per_class=8, test_per_class=4)
    get_dataset("cifar100").prepare(root / "raw", root / "data", 0)
    scenario = root / f"{SCENARIO.id}.json"
    make_scenario("cifar100", root / "data", json.dumps(dataclasses.asdict(SCENARIO)), scenario)
    return root / "data", scenario


def run_config(method: str, train: TrainConfig, method_args: dict) -> RunConfig:
    return RunConfig(
        run_id=f"{method}/default/seed0", experiment=method, point="default", seed=0, method=method,
        dataset="cifar100", backbone="resnet18_seed", protocol="standard", scenario=SCENARIO, train=train,
        method_args=method_args,
    )  # fmt: skip


def train_tasks(cifar, out: Path, run: RunConfig, device: torch.device, tasks: int = 2, evaluate: bool = True) -> Path:
    data, scenario = cifar
    write_text(out / "config.yaml", dump_run_config(run))
    for t in range(tasks):
        train_task(out / "config.yaml", data, scenario, t, out, device=device)
        if evaluate:
            evaluate_task(out / "config.yaml", data, scenario, t, out, device=device)
    return out


def saved(out: Path, t: int, what: str) -> dict:
    return load_torch(out / f"task{t}" / f"{what}.pt")


def assert_earlier_task_is_untouched(out: Path) -> None:
    """Weights and ownership of task 0's weights are bit-identical after task 1."""
    owner0, owner1 = saved(out, 0, "masks")["owner"], saved(out, 1, "masks")["owner"]
    before, after = saved(out, 0, "model")["state_dict"], saved(out, 1, "model")["state_dict"]
    for name, owner in owner0.items():
        used = owner != FREE
        assert used.any(), name
        assert torch.equal(owner1[name][used], owner[used]), name
        assert torch.equal(after[name][used].view(torch.int32), before[name][used].view(torch.int32)), name


@on_gpu
@pytest.mark.parametrize("method", ["dst", "focil"])
def test_bf16_training_leaves_earlier_tasks_bit_identical(cifar, tmp_path, method):
    if method == "dst":
        run = run_config("dst", DST_TRAIN, DST_ARGS)
    else:
        train = TrainConfig(epochs=1, batch_size=8, momentum=0.9, nesterov=True, weight_decay=5e-4, loss_scope="task")
        run = run_config("focil", train, {"trials": 3, "report_every": 2})
    out = train_tasks(cifar, tmp_path, run, DEVICE)
    assert_earlier_task_is_untouched(out)
    log = pd.read_parquet(out / "task1" / "train_log.parquet")
    if method == "dst":  # DST updates ran, and task 0's task-IL accuracy did not move
        assert log["dst_updates"].sum() > 0 and (log["pruned"] == log["grown"]).all()
        acc = pd.concat([pd.read_parquet(out / f"task{t}" / "eval.parquet") for t in (0, 1)])
        first = acc[acc["task_eval"] == 0].set_index("task_trained")["acc_til"]
        assert first[1] == first[0]
    else:  # every trial of the search ran
        assert sorted(log["trial"]) == [0, 1, 2]
    device = read_parquet_provenance(out / "task1" / "train_log.parquet")["device"]
    assert device.startswith("cuda:" if DEVICE.type == "cuda" else "cpu:")


@on_gpu
@pytest.mark.parametrize("init", ["uniform", "ERK"])
def test_masks_drawn_for_cuda_weights_are_the_cpu_draws(init):
    model = create_backbone("resnet18_seed", 100, (32, 32, 3))
    cpu_params = maskable_parameters(model)
    params = maskable_parameters(copy.deepcopy(model).to(DEVICE))
    densities = layer_densities(init, {n: tuple(p.shape) for n, p in params.items()}, 0.1)
    generator = torch.Generator(device=DEVICE).manual_seed(7)
    on_device = random_masks(params, densities, generator)
    on_cpu = random_masks(cpu_params, densities, torch.Generator().manual_seed(7))
    for name, mask in on_device.items():
        assert mask.device == params[name].device and mask.dtype == torch.bool
        assert torch.equal(mask.cpu(), on_cpu[name]), name
    again = random_masks(params, densities, generator)  # the generator moved on
    assert not all(torch.equal(again[n], on_device[n]) for n in again)


@on_gpu
def test_a_dst_run_on_cuda_draws_the_masks_of_the_cpu_run(cifar, tmp_path):
    run = run_config("dst", dataclasses.replace(DST_TRAIN, epochs=1), DST_ARGS | {"update_frequency": 1000})
    runs = [
        train_tasks(cifar, tmp_path / name, run, d, tasks=1, evaluate=False)
        for name, d in (("on", DEVICE), ("cpu", CPU))
    ]
    device_masks, cpu_masks = (saved(out, 0, "masks")["mask"] for out in runs)
    assert all(torch.equal(device_masks[n], cpu_masks[n]) for n in cpu_masks)


@on_gpu
def test_dst_updates_on_the_device_keep_the_density_and_the_layout():
    torch.manual_seed(0)
    model = prepare_model(create_backbone("resnet18_seed", 100, (32, 32, 3)), DEVICE)
    params = maskable_parameters(model)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    masks = random_masks(params, layer_densities("ERK", {n: tuple(p.shape) for n, p in params.items()}, 0.2), generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32, device=DEVICE), torch.randint(0, 100, (16,), device=DEVICE)
    active = sum(int(mask.sum()) for mask in masks.values())
    for growth in ("random", "unfired", "gradient", "momentum"):
        trainer = SparseTrainer(params, masks, optimizer, generator, schedule=DSTSchedule(growth, 1, 100))
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=DEVICE.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        trainer.after_step()  # applies the masks, then updates (frequency 1)
        pruned, grown = (sum(layer[i] for layer in trainer.history[-1]["layers"]) for i in (0, 1))  # per layer
        assert pruned == grown > 0, growth
        assert sum(int(mask.sum()) for mask in trainer.masks.values()) == active, growth
        for name, mask in trainer.masks.items():
            assert mask.device == params[name].device
            assert not params[name][~mask].any(), name
            buffer = optimizer.state[params[name]]["momentum_buffer"]
            assert not buffer[~mask].any(), name
        optimizer.zero_grad()


@on_gpu
def test_faithful_growth_on_cuda_breaks_ties_as_the_original_call_does_on_cuda():
    """Faithful regrowth makes the original code's own torch.sort call, on the device the weights
    are on: among tied (zero) scores it picks what that call picks there, whatever the CPU's order."""
    generator = torch.Generator().manual_seed(1)
    kept = (torch.rand(20, 512, generator=generator) < 0.5).to(DEVICE)
    scores = torch.zeros(20, 512, device=DEVICE)
    scores[:2] = torch.randn(2, 512, generator=generator).to(DEVICE)
    for count in (10, 700, 4378):
        original = kept.float()  # the original code's regrowth, as it is written there
        _, order = torch.sort(torch.abs(scores * (original == 0).float()).flatten(), descending=True)
        original.view(-1)[order[:count]] = 1.0
        picked = grow("momentum", kept, count, generator=torch.Generator(device=DEVICE), exact=False, scores=scores)
        assert torch.equal(picked, original.bool()), count


@on_gpu
def test_the_fused_mask_multiply_equals_the_per_tensor_products():
    model = prepare_model(create_backbone("resnet18_seed", 100, (32, 32, 3)), DEVICE)
    params = maskable_parameters(model)
    masks = random_masks(params, {n: 0.3 for n in params}, torch.Generator().manual_seed(1))
    expected = {n: p.detach() * masks[n] for n, p in params.items()}
    factors = mask_factors(params, masks)
    if DEVICE.type == "cuda":  # the fused kernel's preconditions: one dtype, each pair the same strides
        assert all(f.dtype == params[n].dtype and f.stride() == params[n].stride() for n, f in factors.items())
    apply_masks(params, factors)
    for name, param in params.items():
        assert torch.equal(param.detach().view(torch.int32), expected[name].view(torch.int32)), name


@pytest.fixture
def deterministic_kernels(monkeypatch):
    """Every stage seeds with deterministic cuDNN and CUDA kernels (the flags are restored after)."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    algorithms = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    real = stages.seed_everything

    def seed_deterministically(seed, device):
        generator = real(seed, device)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        torch.use_deterministic_algorithms(True, warn_only=True)
        return generator

    monkeypatch.setattr(stages, "seed_everything", seed_deterministically)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags
    torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])


@on_gpu
@pytest.mark.usefixtures("deterministic_kernels")
def test_a_task_killed_on_cuda_resumes_to_the_uninterrupted_weights(cifar, tmp_path, monkeypatch):
    run = run_config("dst", DST_TRAIN, DST_ARGS)
    reference = train_tasks(cifar, tmp_path / "whole", run, DEVICE, tasks=1, evaluate=False)
    restore_epochs = kill_in_epoch(monkeypatch, epoch=3)
    with pytest.raises(KeyboardInterrupt):
        train_tasks(cifar, tmp_path / "killed", run, DEVICE, tasks=1, evaluate=False)
    assert (tmp_path / "killed" / "resume" / "task0.pt").exists()
    restore_epochs()
    resumed = train_tasks(cifar, tmp_path / "killed", run, DEVICE, tasks=1, evaluate=False)
    for what, part in (("model", "state_dict"), ("masks", "mask")):
        a, b = saved(reference, 0, what)[part], saved(resumed, 0, what)[part]
        assert all(torch.equal(a[n], b[n]) for n in a), what
    log = pd.read_parquet(resumed / "task0" / "train_log.parquet")
    assert log["epoch"].tolist() == [0, 1, 2] and log["dst_updates"].sum() > 0


def sync_warnings(fn) -> int:
    """How many synchronising CUDA calls `fn` makes (CUDA's sync debug mode warns at each; its own
    one-time notice that the mode is a prototype is not one)."""
    if DEVICE.type != "cuda":
        fn()
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("called a synchronizing CUDA operation" in str(w.message) for w in caught)


@on_gpu
def test_the_training_loop_never_waits_for_the_device():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 256)
    data = DeviceData.from_numpy(images, labels, (0.5,) * 3, (0.25,) * 3, DEVICE, crop_padding=4, hflip=True)
    model = prepare_model(create_backbone("resnet18_seed", 10, (32, 32, 3)), DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = maskable_parameters(model)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    frozen = {n: torch.rand(p.shape, generator=generator, device=DEVICE) < 0.3 for n, p in params.items()}
    masks = random_masks(params, {n: 0.2 for n in params}, generator)
    trainer = SparseTrainer(params, masks, optimizer, generator, frozen=frozen)

    def epoch(steps: int) -> None:
        train_epoch(
            model, optimizer, data, torch.arange(16 * steps, device=DEVICE), epoch=0, batch_size=16,
            generator=generator, augment=True, loss_fn=sliced_cross_entropy(0, 10),
            after_backward=trainer.after_backward, after_step=trainer.after_step,
        )  # fmt: skip

    epoch(4)  # warm-up: cuDNN's algorithm search synchronises
    assert sync_warnings(lambda: epoch(2)) == sync_warnings(lambda: epoch(8))


@on_gpu
@pytest.mark.parametrize("backbone", ["resnet18_seed", "mobilenetv2_seed"])
def test_channels_last_predicts_what_the_default_layout_does_at_each_precision(backbone):
    """The layout changes nothing in fp32, and under bf16 each layout is as far from fp32 as the
    other: bf16's own error is the network's (on H200, at initialisation: 2.3 % of the logits' norm
    for resnet18_seed, 37 % for mobilenetv2_seed, for both layouts), not the layout's."""
    torch.manual_seed(0)
    model = create_backbone(backbone, 100, (32, 32, 3)).to(DEVICE)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 32, 32, device=DEVICE)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            fp32, fp32_last = model(x), nhwc(x.contiguous(memory_format=torch.channels_last))
            with autocast(DEVICE):  # the engine's: bf16 on CUDA
                bf16, bf16_last = model(x).float(), nhwc(x.contiguous(memory_format=torch.channels_last)).float()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert torch.isfinite(bf16).all() and torch.isfinite(bf16_last).all()
    assert (fp32_last - fp32).norm() / fp32.norm() < 1e-4
    error, error_last = ((b - fp32).norm() / fp32.norm() for b in (bf16, bf16_last))
    assert abs(error_last - error) <= 0.1 * error + 1e-3


def test_channels_last_batches_hold_the_same_pixels_as_the_default_layout():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), np.arange(24) % 3
    default = DeviceData.from_numpy(images, labels, (0.5,) * 3, (0.25,) * 3, CPU, crop_padding=4, hflip=True)
    nhwc = dataclasses.replace(default, images=default.images.contiguous(memory_format=torch.channels_last))
    assert default.memory_format == torch.contiguous_format and nhwc.memory_format == torch.channels_last
    for augment in (False, True):
        a, _ = default.batch(torch.arange(24), torch.Generator().manual_seed(5), augment=augment)
        b, _ = nhwc.batch(torch.arange(24), torch.Generator().manual_seed(5), augment=augment)
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b)


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """The CPU smoke runs every cell and section whatever the machine's load (the timeout only
    stops a hang)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path), "--cpu-smoke"], env=env,
                   check=True, capture_output=True, timeout=3600)  # fmt: skip
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.log").stat().st_size > 0
    sections = {"environment", "correctness", "throughput", "dst_update", "paper_rates", "projections", "targets",
                "workflow"}  # fmt: skip
    assert sections <= set(report) and all("error" not in str(report[s].get("status", "")) for s in sections)
    tests = report["correctness"]["tests"]  # the GPU tests' own code, run on the CPU
    assert report["correctness"]["returncode"] == 0 and len(tests) >= 8 and set(tests.values()) == {"passed"}
    assert report["paper_rates"] and all(r["images_per_s"] > 0 for r in report["paper_rates"].values())
    cells = [
        e for e in report["throughput"]["results"].values() if e["backbone"] in ("resnet18_seed", "mobilenetv2_seed")
    ]
    assert cells and all(e["status"] == "ok" and e["steps"] == 3 for e in cells)
    assert {e["pipeline"] for e in cells} == {"ceiling", "engine", "dataloader"}
    assert all(e["images_per_s"] > 0 for e in cells)
    assert all(s > 0 for b in report["dst_update"].values() for s in b.get("seconds", {}).values())
    assert report["projections"]["dst_10task"]["minutes"] > 0 and report["projections"]["focil_20task"]["minutes"] > 0
    assert all(report["targets"][t]["value"] > 0 for t in ("engine_vs_ceiling", "engine_vs_dataloader"))
    flow = report["workflow"]
    assert flow["returncode"] == 0 and flow["eval_files"] == flow["expected_eval_files"] > 0 and flow["summary_exists"]
    assert all(device.startswith("cpu:") for device in flow["provenance_device"].values())
