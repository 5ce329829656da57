"""Every bad input is one line: the exit status, one `error:` line that names the file or key and
what was expected, and no output left behind.

Each row of CLI_CASES is one mistake made on the `sparsecl` command line. A few rows run in a
fresh interpreter (`python -m sparsecl.cli`, as a job does); the others run the same `main()` in a
child forked from this process, with its own exit status and stderr, so that a row costs its own
work and not another torch import. CONFIG_CASES are config mistakes, checked the way the workflow
checks them while it builds the DAG (it prints each as one `config error:` line).
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sparsecl import cli, io
from sparsecl.config import HASH_KEY
from sparsecl.data.sources import check_overrides
from sparsecl.data.synth import write_mini_imagenet, write_mnist, write_tiny_imagenet
from sparsecl.errors import ConfigError
from sparsecl.experiments import check_config_files, load_schema, plan_ledger, plan_runs, validate
from sparsecl.scenarios import ScenarioSpec, make_scenario
from sparsecl.summary import summarize

from .fixtures.http_server import FileServer, file_server
from .stage_helpers import evaluate_task, make_run, train_task

ROOT = Path(__file__).resolve().parents[1]
WNIDS = ["n09999999", "n01443537", "n04067472"]
SMALL_RUN = {"num_tasks": 2, "train": {"epochs": 1}}


@dataclass(frozen=True)
class World:
    """Good inputs, built once: a finetune run on the digits with tasks 0 and 1 trained, task 0 of
    another run (seed 1) and of the same run id on another network, and a Tiny-ImageNet zip."""

    config: Path
    data: Path
    scenario: Path
    run: Path
    other_run: Path
    other_net: Path
    tiny_zip: Path
    server: FileServer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad-inputs")
    config, data, scenario = make_run(root, **SMALL_RUN)
    other_config, _, _ = make_run(root, seed=1, **SMALL_RUN)
    net_config, net_data, net_scenario = make_run(root / "net", backbone_args={"hidden": [16]}, **SMALL_RUN)
    for task in (0, 1):
        train_task(config, data, scenario, task, root / "run")
    train_task(other_config, data, scenario, 0, root / "other-run")
    train_task(net_config, net_data, net_scenario, 0, root / "other-net")
    write_tiny_imagenet(root / "tiny.zip", WNIDS, train_per_class=2, val_per_class=1)
    with file_server() as server:
        yield World(
            config, data, scenario, root / "run", root / "other-run", root / "other-net", root / "tiny.zip", server
        )


# ---------------------------------------------------------------- running the command


@dataclass
class Call:
    args: list[str]
    outputs: list[Path] = field(default_factory=list)  # what the command would write: none may be left
    fresh: bool = False  # a new interpreter instead of a forked child
    patch: Callable[[], None] | None = None  # run in the forked child before main(): a failing disk


@dataclass(frozen=True)
class Answer:
    status: int
    stderr: str
    stdout: str


def run(call: Call, tmp: Path) -> Answer:
    if call.fresh:
        done = subprocess.run(
            [sys.executable, "-m", "sparsecl.cli", *call.args], capture_output=True, text=True, timeout=300
        )
        return Answer(done.returncode, done.stderr, done.stdout)
    err, out = tmp / "child.stderr", tmp / "child.stdout"
    pid = os.fork()
    if pid == 0:  # the child: runs main() and exits, never returns into pytest
        status = 70
        try:
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
            sys.argv = ["sparsecl", *call.args]
            if call.patch is not None:
                call.patch()
            cli.main()
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, wait = os.waitpid(pid, 0)
    return Answer(os.waitstatus_to_exitcode(wait), err.read_text(), out.read_text())


def options(**values) -> list[str]:
    """`--name value` pairs (underscores become dashes; a list repeats the option; None leaves it out)."""
    args = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                args += [f"--{name.replace('_', '-')}", str(item)]
    return args


def train(w: World, tmp: Path, task: int = 0, **changes) -> Call:
    out = tmp / "out" / f"task{task}"
    values = {
        "config": w.config, "data_dir": w.data, "scenario": w.scenario, "task": task,
        "out_model": out / "model.pt", "out_masks": out / "masks.pt", "out_log": out / "train_log.parquet",
        "resume": tmp / "resume" / f"task{task}.pt", "device": "cpu",
    }  # fmt: skip
    if task:
        values |= {"prev_model": w.run / f"task{task - 1}/model.pt", "prev_masks": w.run / f"task{task - 1}/masks.pt"}
    values |= changes
    outputs = [values[k] for k in ("out_model", "out_masks", "out_log", "out_eval") if values.get(k)]
    return Call(["train", *options(**values)], outputs)


def evaluate(w: World, tmp: Path, task: int = 0, **changes) -> Call:
    values = {
        "config": w.config, "data_dir": w.data, "scenario": w.scenario, "task": task,
        "model": w.run / f"task{task}/model.pt", "masks": [w.run / f"task{t}/masks.pt" for t in range(task + 1)],
        "out": tmp / "out" / f"task{task}" / "eval.parquet", "device": "cpu",
    }  # fmt: skip
    values |= changes
    return Call(["evaluate", *options(**values)], [values["out"]])


def usage(*args: str) -> Call:
    return Call(list(args))


def fresh(call: Call) -> Call:
    """The same call in a new interpreter: what a job runs, import warnings included."""
    call.fresh = True
    return call


# ---------------------------------------------------------------- bad prepared data


def broken_data(w: World, tmp: Path, name: str, array: np.ndarray | None = None, *, record: bool = False) -> Path:
    """A copy of the prepared digits with `name` replaced by `array` (None: deleted); `record`
    writes the new array's shape, dtype and sha256 into meta.json, so the deeper checks are reached."""
    data = tmp / "data"
    shutil.copytree(w.data, data)
    path = data / name
    if array is None:
        path.unlink()
        return data
    np.save(path, array)
    if record:
        meta = json.loads((data / "meta.json").read_text())
        meta["arrays"][name] = {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": io.sha256_file(path)}
        (data / "meta.json").write_text(json.dumps(meta))
    return data


def labels(w: World) -> np.ndarray:
    return np.load(w.data / "train/labels.npy")


def images(w: World) -> np.ndarray:
    return np.load(w.data / "train/images.npy")


def with_label(w: World, value) -> np.ndarray:
    out = labels(w).copy()
    out[0] = value
    return out


def truncated_images(w: World, tmp: Path) -> Path:
    data = tmp / "data"
    shutil.copytree(w.data, data)
    path = data / "train/images.npy"
    path.write_bytes(path.read_bytes()[:-1000])
    return data


def meta_text(w: World, tmp: Path, text: str) -> Path:
    data = tmp / "data"
    shutil.copytree(w.data, data)
    (data / "meta.json").write_text(text)
    return data


def meta_without(w: World, tmp: Path, key: str) -> Path:
    meta = json.loads((w.data / "meta.json").read_text())
    del meta[key]
    return meta_text(w, tmp, json.dumps(meta))


def garbage_file(w: World, tmp: Path, name: str) -> Path:
    data = tmp / "data"
    shutil.copytree(w.data, data)
    (data / name).write_bytes(b"this is not a numpy file\n" * 4)
    return data


# ---------------------------------------------------------------- bad scenarios


def scenario_copy(
    w: World, tmp: Path, *, json_text: str | None = None, npz: bytes | None = None, keep_npz=True
) -> Path:
    path = tmp / "scenario" / w.scenario.name
    path.parent.mkdir()
    path.write_text(json_text if json_text is not None else w.scenario.read_text())
    if npz is not None:
        path.with_suffix(".npz").write_bytes(npz)
    elif keep_npz:
        shutil.copy(w.scenario.with_suffix(".npz"), path.with_suffix(".npz"))
    return path


def edited_order(w: World) -> str:
    doc = json.loads(w.scenario.read_text())
    doc["class_order"] = doc["class_order"][::-1]
    return json.dumps(doc)


def other_split_npz(w: World, tmp: Path) -> bytes:
    spec = ScenarioSpec(num_tasks=2, classes_per_task=2, validation_fraction=0.2)
    made = tmp / "made" / f"{spec.id}.json"
    make_scenario("digits", w.data, json.dumps(asdict(spec)), made)
    return made.with_suffix(".npz").read_bytes()


def scenario_of_another_split(w: World, tmp: Path) -> Path:
    """A 3-task scenario saved under the name of the run's 2-task scenario."""
    spec = ScenarioSpec(num_tasks=3, classes_per_task=2)
    made = tmp / "made" / f"{spec.id}.json"
    make_scenario("digits", w.data, json.dumps(asdict(spec)), made)
    path = tmp / "scenario" / w.scenario.name
    path.parent.mkdir()
    shutil.copy(made, path)
    shutil.copy(made.with_suffix(".npz"), path.with_suffix(".npz"))
    return path


def make_scenario_call(w: World, tmp: Path, spec: str, name: str = "") -> Call:
    out = tmp / "scenarios" / (name or w.scenario.name)
    args = ["data", "scenario", "digits", *options(data_dir=w.data, spec=spec, out=out)]
    return Call(args, [out, out.with_suffix(".npz")])


SPEC = json.dumps(asdict(ScenarioSpec(num_tasks=2, classes_per_task=2)))


def spec_of(**changes) -> str:
    return json.dumps({**json.loads(SPEC), **changes})


# ---------------------------------------------------------------- bad run configs


def run_hash(w: World) -> str:
    """The hash the workflow passes a job: the run config's as written (as the config resolves)."""
    return yaml.safe_load(w.config.read_text())[HASH_KEY]


def run_config(w: World, tmp: Path, change: Callable[[dict], None], rehash: bool = True) -> Path:
    """The run's config.yaml with `change` applied; `rehash` writes the matching config_hash, as
    the workflow would, so the type checks behind the hash check are reached."""
    content = yaml.safe_load(w.config.read_text())
    content.pop(HASH_KEY)
    recorded = io.config_hash(content)
    change(content)
    path = tmp / "config.yaml"
    path.write_text(
        yaml.safe_dump({**content, HASH_KEY: io.config_hash(content) if rehash else recorded}, sort_keys=True)
    )
    return path


def setting(section: str, key: str, value) -> Callable[[dict], None]:
    def change(content: dict) -> None:
        (content[section] if section else content)[key] = value

    return change


def text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_config_call(w: World, tmp: Path, config_json: str) -> Call:
    out = tmp / "out" / "config.yaml"
    return Call(["run-config", *options(json=config_json, out=out)], [out])


def run_json(w: World, change: Callable[[dict], None]) -> str:
    content = yaml.safe_load(w.config.read_text())
    content.pop(HASH_KEY)
    change(content)
    return json.dumps(content)


# ---------------------------------------------------------------- bad model and masks files


def crafted(w: World, tmp: Path, name: str, change: Callable[[dict], dict]) -> Path:
    """Task 0's file `name` (model.pt or masks.pt), loaded, changed and saved again."""
    saved = io.load_torch(w.run / "task0" / name)
    path = tmp / "crafted" / name
    io.save_torch(path, change(saved))
    return path


def full_masks(w: World, shapes: dict | None = None, drop: str = "", dtype=torch.bool, fill: int = 1) -> dict:
    """A mask (or owner map) over task 0's network weights, with the given shapes changed."""
    weights = io.load_torch(w.run / "task0" / "model.pt")["state_dict"]
    out = {
        k: torch.full(tuple(v.shape), fill, dtype=dtype)
        for k, v in weights.items()
        if k.endswith("weight") and k != drop
    }
    return out | {k: torch.ones(shape, dtype=dtype) for k, shape in (shapes or {}).items()}


def with_masks(w: World, tmp: Path, **entries) -> Path:
    return crafted(w, tmp, "masks.pt", lambda saved: {**saved, **entries})


def infinite_first_weight(saved: dict) -> dict:
    weights = dict(saved["state_dict"])
    weights["features.0.weight"] = weights["features.0.weight"].clone().index_fill_(0, torch.tensor([0]), float("inf"))
    return {**saved, "state_dict": weights}


def not_torch(tmp: Path) -> Path:
    path = tmp / "crafted" / "model.pt"
    path.parent.mkdir()
    path.write_text("model weights\n")
    return path


# ---------------------------------------------------------------- unwritable outputs


def failing(function: str, errno_: int, name: str) -> Callable[[], None]:
    """A patch for the child: `os.replace` onto `name`, writing the temporary file of `name`, or
    creating a temporary file for `name` fails with `errno_` (a full disk, a read-only place)."""

    def fail(path) -> None:
        raise OSError(errno_, os.strerror(errno_), str(path))

    def patch() -> None:
        if function == "replace":
            real = os.replace
            os.replace = lambda src, dst: fail(dst) if Path(dst).name == name else real(src, dst)
        elif function == "write":
            real_write = pathlib.Path.write_bytes

            def write_half(self, data):
                if not self.name.startswith(f".{name}."):
                    return real_write(self, data)
                real_write(self, data[: len(data) // 2])
                fail(self)

            pathlib.Path.write_bytes = write_half
        else:
            real_mkstemp = tempfile.mkstemp
            tempfile.mkstemp = lambda **kw: fail(kw["dir"]) if kw["prefix"] == f".{name}." else real_mkstemp(**kw)

    return patch


def short_npy_write(name: str) -> Callable[[], None]:
    """numpy writes arrays with C stdio: a full disk there is an OSError without errno."""

    def patch() -> None:
        real_save = np.save

        def save(file, array, *args, **kwargs):
            if Path(getattr(file, "name", "")).name.startswith(f".{name}."):
                raise OSError("1347 requested and 496 written")
            return real_save(file, array, *args, **kwargs)

        np.save = save

    return patch


def with_patch(call: Call, patch: Callable[[], None]) -> Call:
    call.patch = patch
    return call


def under_a_file(tmp: Path, *parts: str) -> Path:
    (tmp / "results").write_text("a file where a directory belongs\n")
    return tmp.joinpath("results", *parts)


def directory_in_the_way(w: World, tmp: Path) -> Call:
    call = train(w, tmp)
    log = call.outputs.pop()  # the log path is a directory: it exists, the other outputs must not
    log.mkdir(parents=True)
    return call


# ---------------------------------------------------------------- bad raw data


def tiny_raw(w: World, tmp: Path, drop: str = "", edit: tuple[str, bytes, bytes] | None = None) -> Path:
    """The Tiny-ImageNet zip in a raw directory, read-only as the download rule leaves it, with the
    members containing `drop` left out and `edit` = (member suffix, old, new) applied."""
    raw = tmp / "raw"
    raw.mkdir()
    path = raw / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(w.tiny_zip) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            if drop and drop in name:
                continue
            data = src.read(name)
            if edit and name.endswith(edit[0]):
                data = data.replace(edit[1], edit[2], 1)
            dst.writestr(name, data)
    path.chmod(0o444)
    return raw


def truncated_raw(w: World, tmp: Path) -> Path:
    raw = tiny_raw(w, tmp)
    path = raw / "tiny-imagenet-200.zip"
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-300])
    path.chmod(0o444)
    return raw


def mnist_raw(tmp: Path) -> Path:
    """MNIST raw files whose train labels file holds images (idx magic 2051, not 2049)."""
    raw = tmp / "raw"
    write_mnist(raw, train=10, test=10)
    labels_file = raw / "train-labels-idx1-ubyte.gz"
    labels_file.write_bytes((raw / "train-images-idx3-ubyte.gz").read_bytes())
    labels_file.chmod(0o444)
    return raw


def mini_raw(tmp: Path) -> Path:
    raw = tmp / "raw"
    raw.mkdir()
    write_mini_imagenet(raw / "miniImageNet.zip", ["n01532829"], [100])
    return raw


def prepare(dataset: str, raw: Path, tmp: Path, out: Path | None = None, seed: int | None = None) -> Call:
    out = out or tmp / "prepared"
    outputs = [out / "meta.json", *(out / s / f"{k}.npy" for s in ("train", "test") for k in ("images", "labels"))]
    return Call(["data", "prepare", dataset, *options(raw_dir=raw, out_dir=out, seed=seed)], outputs)


def unlabeled(tmp: Path, pool: str) -> Call:
    out = tmp / "pool"
    return Call(["data", "unlabeled", pool, *options(out_dir=out)], [out / "pool.npy", out / "meta.json"])


def download(tmp: Path, source: str, filename: str, sources: dict | str | None = None, **extra) -> Call:
    out = tmp / "raw" / source / filename
    text = sources if isinstance(sources, str) else json.dumps(sources or {})
    args = ["data", "download", source, *options(file=filename, out=out, sources=text, retries=0, **extra)]
    return Call(args, [out, out.with_name(out.name + ".part")])


def served(w: World, tmp: Path, data: bytes | None) -> str:
    """A URL of the test server: `data` under a name unique to this test, or a missing file."""
    name = f"{tmp.name}/tiny-imagenet-200.zip"
    return w.server.add(name, data) if data is not None else f"{w.server.base_url}/{name}"


def my_copy(w: World, tmp: Path) -> str:
    path = tmp / "mine" / "tiny-imagenet-200.zip"
    path.parent.mkdir()
    shutil.copy(w.tiny_zip, path)
    return str(path)


# ---------------------------------------------------------------- the table

Setup = Callable[[World, Path], Call]


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    expect: str  # a distinctive part of the error line; `{tmp}` stands for the test's directory
    status: int = 1


RUN0 = "finetune/default/seed0"
NET16 = 'mlp{"hidden": [16]} x 4 classes'

CLI_CASES = [
    # usage errors: click's usage message, one `Error:` line, exit 2
    Case("no sub-command", lambda w, t: fresh(usage()), "Missing command", 2),
    Case("no data sub-command", lambda w, t: usage("data"), "Missing command", 2),
    Case("unknown sub-command", lambda w, t: usage("bogus"), "No such command 'bogus'", 2),
    Case("missing required option", lambda w, t: usage("train", "--config", "x.yaml"), "Missing option", 2),
    Case("task not an integer", lambda w, t: fresh(usage("evaluate", "--task", "abc")), "Invalid value for '--task'", 2),
    Case("option without its value", lambda w, t: usage("evaluate", "--masks"), "'--masks' requires an argument", 2),
    Case("--input without =", lambda w, t: train(w, t, input="prev"), "expected NAME=PATH, got 'prev'", 2),
    Case("threads not an integer", lambda w, t: train(w, t, threads="many"), "Invalid value for '--threads'", 2),
    # prepared data
    Case("label id >= classes", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/labels.npy", with_label(w, 10), record=True)),
         "train/labels.npy: expected ids in [0, 10), got [0, 10]"),
    Case("negative label id", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/labels.npy", with_label(w, -1), record=True)),
         "expected ids in [0, 10), got [-1, 9]"),
    Case("float labels", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/labels.npy", labels(w).astype(np.float64), record=True)),
         "train/labels.npy: expected integer class ids, got float64"),
    Case("float labels, meta.json unchanged", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/labels.npy", labels(w).astype(np.float32))),
         "train/labels.npy: float32 [1347] does not match meta.json's int64 [1347]"),
    Case("labels of the wrong length", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/labels.npy", labels(w)[:1000], record=True)),
         "train/labels.npy: expected shape (1347,), got (1000,)"),
    Case("truncated images.npy", lambda w, t: train(w, t, data_dir=truncated_images(w, t)), "train/images.npy: not a valid .npy file"),
    Case("float32 images.npy", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/images.npy", images(w).astype(np.float32))),
         "train/images.npy: float32 [1347, 8, 8, 1] does not match meta.json's uint8 [1347, 8, 8, 1]"),
    Case("images of another shape", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/images.npy", images(w).reshape(-1, 4, 16, 1))),
         "train/images.npy: uint8 [1347, 4, 16, 1] does not match meta.json's uint8 [1347, 8, 8, 1]"),
    Case("images of another shape, recorded", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/images.npy", images(w).reshape(-1, 4, 16, 1), record=True)),
         "train/images.npy: expected uint8 images [N, 8, 8, 1] (meta.json's image_shape), got uint8 [1347, 4, 16, 1]"),
    Case("images changed in place", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/images.npy", 255 - images(w))),
         "train/images.npy: content changed since it was prepared (sha256 mismatch)"),
    Case("images.npy not a numpy file", lambda w, t: train(w, t, data_dir=garbage_file(w, t, "train/images.npy")),
         "train/images.npy: not a valid .npy file"),
    Case("missing images.npy", lambda w, t: train(w, t, data_dir=broken_data(w, t, "train/images.npy")),
         "train/images.npy: prepared data not found (run the prepare rule)"),
    Case("missing test labels", lambda w, t: evaluate(w, t, data_dir=broken_data(w, t, "test/labels.npy")),
         "test/labels.npy: prepared data not found"),
    Case("missing meta.json", lambda w, t: train(w, t, data_dir=broken_data(w, t, "meta.json")), "data/meta.json: file not found"),
    Case("meta.json not JSON", lambda w, t: train(w, t, data_dir=meta_text(w, t, "{'num_classes': 10")), "data/meta.json: not valid JSON"),
    Case("meta.json a list", lambda w, t: train(w, t, data_dir=meta_text(w, t, "[1, 2]")),
         "data/meta.json: expected the meta.json of a prepared dataset (no 'num_classes')"),
    Case("meta.json without mean", lambda w, t: train(w, t, data_dir=meta_without(w, t, "mean")), "(no 'mean'); rerun the prepare rule"),
    Case("meta.json without checksums", lambda w, t: train(w, t, data_dir=meta_without(w, t, "arrays")), "data/meta.json: no array checksums"),
    # scenarios
    Case("missing scenario .npz", lambda w, t: train(w, t, scenario=scenario_copy(w, t, keep_npz=False)),
         ".npz: scenario index file not found"),
    Case("scenario .npz not a numpy file", lambda w, t: evaluate(w, t, scenario=scenario_copy(w, t, npz=b"PK\x03\x04 broken")),
         ".npz: not a readable scenario index file"),
    Case("missing scenario file", lambda w, t: train(w, t, scenario=t / "nowhere" / w.scenario.name), "json: file not found"),
    Case("scenario file not JSON", lambda w, t: train(w, t, scenario=scenario_copy(w, t, json_text="id: x\n")), ".json: not valid JSON"),
    Case("scenario file without its spec", lambda w, t: train(w, t, scenario=scenario_copy(w, t, json_text='{"id": "x"}')),
         ".json: not a scenario file written by sparsecl"),
    Case("scenario of another split under the run's name", lambda w, t: evaluate(w, t, scenario=scenario_of_another_split(w, t)),
         "scenario 'class-t3k2-natural-s0' of digits, this run uses 'class-t2k2-natural-s0' of digits"),
    Case("a scenario whose class order was edited under its id", lambda w, t: train(w, t, scenario=scenario_copy(w, t, json_text=edited_order(w))),
         "class-t2k2-natural-s0.json: its class order, tasks or index arrays do not match the digest it was written with"),
    Case("a scenario with another split's index arrays", lambda w, t: evaluate(w, t, scenario=scenario_copy(w, t, npz=other_split_npz(w, t))),
         "class-t2k2-natural-s0.json: its class order, tasks or index arrays do not match"),
    Case("a scenario spec with a task count in quotes", lambda w, t: make_scenario_call(w, t, spec_of(num_tasks="2")),
         "--spec.num_tasks: expected an integer, got '2'"),
    Case("report --decimals -1", lambda w, t: usage("report", "--metrics", "m", "--matrix", "x", "--curves", "c", "--ledger", "{}",
                                                   "--tables-dir", str(t), "--plots-dir", str(t), "--decimals", "-1"),
         "Invalid value for '--decimals'", 2),
    Case("scenario id not matching its file name", lambda w, t: make_scenario_call(w, t, SPEC, "class-t5k2-natural-s0.json"),
         "class-t5k2-natural-s0.json: file name does not match the scenario id 'class-t2k2-natural-s0'"),
    Case("scenario spec not JSON", lambda w, t: make_scenario_call(w, t, "{num_tasks: 2}"), "--spec: expected a scenario spec as JSON"),
    Case("scenario spec with an unknown key", lambda w, t: make_scenario_call(w, t, '{"tasks": 2}'),
         "--spec: unknown key 'tasks'; expected some of: chunks, class_order"),
    # run configs
    Case("epochs: abc", lambda w, t: train(w, t, config=run_config(w, t, setting("train", "epochs", "abc"))),
         "config.yaml: train.epochs: expected an integer, got 'abc'"),
    Case('lr: "x"', lambda w, t: train(w, t, config=run_config(w, t, setting("train", "lr", "x"))),
         "config.yaml: train.lr: expected a number, got 'x'"),
    Case('augment: "yes"', lambda w, t: evaluate(w, t, config=run_config(w, t, setting("train", "augment", "yes"))),
         "config.yaml: train.augment: expected true or false, got 'yes'"),
    Case("num_tasks: 2.5", lambda w, t: train(w, t, config=run_config(w, t, setting("scenario", "num_tasks", 2.5))),
         "config.yaml: scenario.num_tasks: expected an integer, got 2.5"),
    Case("backbone_args not a mapping", lambda w, t: train(w, t, config=run_config(w, t, setting("", "backbone_args", [32]))),
         "config.yaml: run.backbone_args: expected a mapping, got [32]"),
    Case("train not a mapping", lambda w, t: train(w, t, config=run_config(w, t, setting("", "train", 3))),
         "config.yaml: train: expected a mapping, got 3"),
    Case("unknown run config key", lambda w, t: train(w, t, config=run_config(w, t, setting("train", "warmup", 2))),
         "config.yaml: train.warmup: unknown key"),
    Case("unknown protocol", lambda w, t: train(w, t, config=run_config(w, t, setting("", "protocol", "loose"))),
         "config.yaml: protocol: expected one of ('standard', 'faithful'), got 'loose'"),
    Case("hand-edited lr", lambda w, t: train(w, t, config=run_config(w, t, setting("train", "lr", 0.5), rehash=False)),
         "config.yaml: edited by hand (its content does not match its config_hash)"),
    Case("hand-edited lr with its hash recomputed", lambda w, t: train(w, t, config=run_config(w, t, setting("train", "lr", 0.5)), config_hash=run_hash(w)),
         "config.yaml: not what the workflow config resolves to (its config_hash"),
    Case("missing run config", lambda w, t: train(w, t, config=t / "nowhere.yaml"), "nowhere.yaml: run config not found"),
    Case("run config not YAML", lambda w, t: train(w, t, config=text_file(t / "c.yaml", "train: [1\n")), "c.yaml: not valid YAML"),
    Case("run config a list", lambda w, t: train(w, t, config=text_file(t / "c.yaml", "- 1\n")),
         "c.yaml: expected a mapping at the top level"),
    Case("run-config --json not JSON", lambda w, t: run_config_call(w, t, "{'run_id': 1}"),
         "--json: expected the resolved run config as JSON"),
    Case("run-config --json with epochs: abc", lambda w, t: run_config_call(w, t, run_json(w, setting("train", "epochs", "abc"))),
         "train.epochs: expected an integer, got 'abc'"),
    # model and masks files
    Case("wrong number of masks files", lambda w, t: evaluate(w, t, task=1, masks=[w.run / "task0/masks.pt"]),
         "evaluate task 1: expected 2 masks files (tasks 0..1), got 1"),
    Case("wrong number of masks files (fresh interpreter)",
         lambda w, t: fresh(evaluate(w, t, masks=[w.run / "task0/masks.pt"] * 2)),
         "evaluate task 0: expected 1 masks files (tasks 0..0), got 2"),
    Case("masks of another architecture", lambda w, t: evaluate(w, t, masks=[w.other_net / "task0/masks.pt"]),
         f"task0/masks.pt: masks file for {NET16}, this run uses mlp"),
    Case("model of another architecture", lambda w, t: train(w, t, task=1, prev_model=w.other_net / "task0/model.pt"),
         f"task0/model.pt: model file for {NET16}"),
    Case("masks.pt from another run", lambda w, t: evaluate(w, t, masks=[w.other_run / "task0/masks.pt"]),
         f"masks file of run 'finetune/default/seed1', not of this run '{RUN0}'"),
    Case("model.pt from another run", lambda w, t: evaluate(w, t, model=w.other_run / "task0/model.pt"),
         f"model file of run 'finetune/default/seed1', not of this run '{RUN0}'"),
    Case("model.pt of another task", lambda w, t: evaluate(w, t, model=w.run / "task1/model.pt"),
         "task1/model.pt: model file of task 1, expected task 0"),
    Case("masks files in the wrong order", lambda w, t: evaluate(w, t, task=1, masks=[w.run / "task1/masks.pt", w.run / "task0/masks.pt"]),
         "task1/masks.pt: masks file of task 1, expected task 0"),
    Case("model.pt not a torch file", lambda w, t: evaluate(w, t, model=not_torch(t)), "model.pt: not a readable torch file"),
    Case("missing model.pt", lambda w, t: evaluate(w, t, model=t / "nowhere/model.pt"), "nowhere/model.pt: file not found"),
    Case("masks.pt without provenance", lambda w, t: evaluate(w, t, masks=[crafted(w, t, "masks.pt", lambda s: {k: v for k, v in s.items() if k != "provenance"})]),
         "masks.pt: not a masks file written by sparsecl (no provenance)"),
    Case("weights that do not fit", lambda w, t: evaluate(w, t, model=crafted(w, t, "model.pt", lambda s: {**s, "state_dict": {"w": torch.zeros(2)}})),
         "model.pt: weights do not fit this run's network"),
    # stage files that load but are not what they claim
    Case("a mask of a broadcastable wrong shape", lambda w, t: evaluate(w, t, masks=[with_masks(w, t, mask=full_masks(w, {"features.0.weight": (1, 64)}))]),
         "masks.pt: mask of 'features.0.weight' has shape [1, 64], the weight [32, 64]"),
    Case("masks that lack a layer", lambda w, t: evaluate(w, t, masks=[with_masks(w, t, mask=full_masks(w, drop="classifier.weight"), owner=full_masks(w, drop="classifier.weight", fill=0))]),
         "masks.pt: no mask for 'classifier.weight'"),
    Case("float masks", lambda w, t: evaluate(w, t, masks=[with_masks(w, t, mask=full_masks(w, dtype=torch.float32))]),
         "masks.pt: mask of 'features.0.weight' is torch.float32, expected bool"),
    Case("an owner map without its mask", lambda w, t: evaluate(w, t, masks=[with_masks(w, t, owner=full_masks(w, fill=0))]),
         "masks.pt: an owner map without its 'mask'"),
    Case("a mask of a weight the network does not have", lambda w, t: evaluate(w, t, masks=[with_masks(w, t, mask={"features.9.weight": torch.ones(2, 2, dtype=torch.bool)})]),
         "masks.pt: mask of 'features.9.weight', which is not a weight of this network"),
    Case("a model of NaN weights", lambda w, t: evaluate(w, t, model=crafted(w, t, "model.pt", lambda s: {**s, "state_dict": {k: v * float("nan") for k, v in s["state_dict"].items()}})),
         "model.pt: weights of 'features.0.weight' are not finite (NaN or infinity)"),
    Case("a previous model with an infinite weight", lambda w, t: train(w, t, task=1, prev_model=crafted(w, t, "model.pt", infinite_first_weight)),
         "model.pt: weights of 'features.0.weight' are not finite"),
    Case("evaluate --task beyond the scenario", lambda w, t: evaluate(w, t, task=5, model=w.run / "task1/model.pt", masks=[w.run / "task0/masks.pt"]),
         ".json: task 5 does not exist (scenario has 2 tasks)"),
    Case("train --task beyond the scenario", lambda w, t: train(w, t, task=2), ".json: task 2 does not exist (scenario has 2 tasks)"),
    Case("train a later task without the previous files", lambda w, t: train(w, t, task=1, prev_model=None, prev_masks=None),
         "task 1 stage train: the model and masks files of stage train of task 0 are required"),
    Case("train and evaluate without the earlier tasks' masks", lambda w, t: train(w, t, task=1, out_eval=t / "out/task1/eval.parquet"),
         "evaluate task 1: expected 2 masks files (tasks 0..1), got 1"),
    Case("train and evaluate with an earlier task's masks missing", lambda w, t: train(w, t, task=1, out_eval=t / "out/task1/eval.parquet", eval_masks=[t / "nowhere/masks.pt"]),
         "nowhere/masks.pt: no such masks file (the evaluation after task 1 reads it)"),
    # outputs that cannot be written
    Case("results is a regular file", lambda w, t: train(w, t, out_model=under_a_file(t, "task0/model.pt"),
                                                          out_masks=t / "results/task0/masks.pt", out_log=t / "results/task0/log.parquet"),
         "results/task0/model.pt: cannot create it: a parent of it is a file, not a directory"),
    Case("evaluation output under a file", lambda w, t: evaluate(w, t, out=under_a_file(t, "eval.parquet")),
         "results/eval.parquet: cannot create it: a parent of it is a file"),
    Case("prepared data under a file", lambda w, t: prepare("digits", t / "raw", t, out=under_a_file(t, "digits")),
         "results/digits/train/images.npy: cannot create it: a parent of it is a file"),
    Case("an output path that is a directory", directory_in_the_way,
         "task0/train_log.parquet: cannot write: a directory of that name is in the way"),
    Case("unwritable output directory", lambda w, t: with_patch(train(w, t), failing("mkstemp", errno.EACCES, "masks.pt")),
         "task0/masks.pt: cannot write: permission denied"),
    Case("disk full on the last rename", lambda w, t: with_patch(train(w, t), failing("replace", errno.ENOSPC, "model.pt")),
         "task0/model.pt: cannot write: no space left on device"),
    Case("disk full while writing", lambda w, t: with_patch(train(w, t), failing("write", errno.ENOSPC, "model.pt")),
         "task0/model.pt: cannot write: no space left on device"),
    Case("read-only file system", lambda w, t: with_patch(evaluate(w, t), failing("replace", errno.EROFS, "eval.parquet")),
         "eval.parquet: cannot write: read-only file system"),
    Case("disk full under numpy's own writer", lambda w, t: with_patch(prepare("digits", t / "raw", t), short_npy_write("images.npy")),
         "prepared/train/images.npy: cannot write: only part of it was written (1347 requested and 496 written); no space left on device?"),
    Case("disk full on meta.json", lambda w, t: with_patch(prepare("digits", t / "raw", t), failing("replace", errno.ENOSPC, "meta.json")),
         "prepared/meta.json: cannot write: no space left on device"),
    # raw data: downloads and preparation
    Case("Tiny-ImageNet class without train images", lambda w, t: prepare("tiny_imagenet", tiny_raw(w, t, drop="train/n04067472/"), t),
         "tiny-imagenet-200.zip: class n04067472 of wnids.txt has no images in tiny-imagenet-200/train/n04067472/images/"),
    Case("unknown wnid in val_annotations.txt",
         lambda w, t: prepare("tiny_imagenet", tiny_raw(w, t, edit=("val_annotations.txt", b"\tn04067472\t", b"\tn00000000\t")), t),
         "val_annotations.txt line 3: wnid 'n00000000' (of val_2.JPEG) is not in wnids.txt"),
    Case("corrupt protected raw file", lambda w, t: prepare("tiny_imagenet", truncated_raw(w, t), t),
         "corrupt or truncated archive (File is not a zip file); remove it (chmod u+w {tmp}/raw/tiny-imagenet-200.zip"
         " && rm {tmp}/raw/tiny-imagenet-200.zip) and rerun to fetch it again"),
    Case("raw file of the wrong kind", lambda w, t: prepare("mnist", mnist_raw(t), t),
         "train-labels-idx1-ubyte.gz: expected idx magic number 2049, got 2051; remove it (chmod u+w"),
    Case("raw file not downloaded", lambda w, t: prepare("cifar10", t / "raw", t),
         "raw/cifar-10-python.tar.gz: raw file not found (run the download rule first)"),
    Case("miniImageNet class of 100 images", lambda w, t: prepare("mini_imagenet", mini_raw(t), t),
         "miniImageNet.zip: class n01532829: 100 images; expected more than 100"),
    Case("unknown dataset", lambda w, t: prepare("imagenet", t / "raw", t), "unknown dataset 'imagenet'; expected one of: cifar10"),
    Case("bad data.sources path", lambda w, t: download(t, "tiny_imagenet", "tiny-imagenet-200.zip", {"tiny_imagenet": {"path": str(t / "mine.zip")}}),
         "data.sources.tiny_imagenet.path: {tmp}/mine.zip not found; expected your copy of tiny-imagenet-200.zip"),
    Case("checksum mismatch of a download", lambda w, t: download(t, "tiny_imagenet", "tiny-imagenet-200.zip", {"tiny_imagenet": {"url": served(w, t, w.tiny_zip.read_bytes())}}),
         "deleted the downloaded copy {tmp}/raw/tiny_imagenet/tiny-imagenet-200.zip.part; if that file is a re-packed copy"
         " you trust, accept it with data.sources.tiny_imagenet.checksums: {tiny-imagenet-200.zip: 'md5:"),
    Case("checksum mismatch of a local copy",
         lambda w, t: download(t, "tiny_imagenet", "tiny-imagenet-200.zip", {"tiny_imagenet": {"path": my_copy(w, t), "checksums": {"tiny-imagenet-200.zip": "0" * 32}}}),
         "(your {tmp}/mine/tiny-imagenet-200.zip is untouched); if that file is a re-packed copy you trust, accept it with"
         " data.sources.tiny_imagenet.checksums"),
    Case("HTTP 404", lambda w, t: download(t, "tiny_imagenet", "tiny-imagenet-200.zip", {"tiny_imagenet": {"url": served(w, t, None)}}),
         "tiny-imagenet-200.zip: HTTP 404"),
    Case("missing manual file", lambda w, t: download(t, "mini_imagenet", "miniImageNet.zip", manual_dir=t / "manual"),
         "mini_imagenet: {tmp}/manual/miniImageNet.zip not found; download the miniImageNet archive (Kaggle login required)"),
    Case("unknown raw file", lambda w, t: download(t, "cifar10", "cifar10.tgz"), "cifar10: no raw file 'cifar10.tgz'; expected one of"),
    Case("--sources not JSON", lambda w, t: fresh(download(t, "cifar10", "cifar-10-python.tar.gz", "{cifar10: {}}")),
         "--sources: expected the data.sources mapping as JSON"),
    Case("bad checksum in --sources", lambda w, t: download(t, "cifar10", "cifar-10-python.tar.gz", {"cifar10": {"checksums": {"cifar-10-python.tar.gz": "abc"}}}),
         "data.sources.cifar10.checksums.cifar-10-python.tar.gz: expected an md5 (32 hex digits) or sha256"),
    Case("override of a source without raw files", lambda w, t: download(t, "cifar10", "cifar-10-python.tar.gz", {"digits": {"url": "http://x"}}),
         "data.sources.digits: 'digits' has no raw files"),
    Case("download of a built-in dataset", lambda w, t: download(t, "digits", "digits.npz"),
         "digits: has no raw files to download (it is built in); sources with raw files: cifar10, cifar100"),
    # command-line options out of their range
    Case("an unknown device", lambda w, t: train(w, t, device="tpu"), "--device: 'tpu' is not a device; expected auto, cpu, cuda or cuda:N"),
    Case("a misspelt cuda device", lambda w, t: evaluate(w, t, device="cuda0"), "--device: 'cuda0' is not a device"),
    Case("prepare with a negative seed", lambda w, t: prepare("digits", t / "raw", t, seed=-1),
         "Invalid value for '--seed': Input should be greater than or equal to 0", 2),
    Case("an unlabeled pool without its source", lambda w, t: unlabeled(t, "cifar10"),
         "--source: the cifar10 pool is read from the prepared cifar10 directory; none was given"),
    Case("the Tiny Images pool without its pickle", lambda w, t: unlabeled(t, "tiny_images"),
         "--source: the tiny_images pool is read from the Tiny Images pickle; none was given"),
    # scenarios that leave a task or step without training images
    Case("a holdout of every training image", lambda w, t: make_scenario_call(w, t, spec_of(validation_fraction=0.999), "class-t2k2-natural-val0.999-s0.json"),
         "scenario.validation_fraction: 0.999 holds out all"),
    Case("class-incremental with chunks", lambda w, t: make_scenario_call(w, t, spec_of(chunks=[1, 1])),
         "scenario.chunks: only a data-incremental scenario (kind: data) has chunks"),
]  # fmt: skip


# ---------------------------------------------------------------- results read by summarize, report and a resume
# Evaluations, summaries and resume files as the run wrote them, damaged one way at a time.

RUN_FILES = ("metrics.parquet", "accuracy_matrix.csv", "curves.parquet")


def evaluations(w: World) -> list[Path]:
    """The run's evaluation after each task, written once (by the first case that reads them)."""
    paths = [w.run / f"task{task}/eval.parquet" for task in (0, 1)]
    for task, path in enumerate(paths):
        if not path.exists():
            evaluate_task(w.config, w.data, w.scenario, task, w.run)
    return paths


def run_summary(w: World) -> dict[str, Path]:
    """The run's metrics, accuracy matrix and curves, written once from its evaluations."""
    paths = {name: w.run / name for name in RUN_FILES}
    if not all(path.exists() for path in paths.values()):
        summarize(w.config, evaluations(w), *paths.values())
    return paths


def edited_eval(w: World, tmp: Path, task: int, change: Callable[[pd.DataFrame, dict], None]) -> list[Path]:
    """The run's evaluations, that of `task` copied and edited (its rows and provenance)."""
    paths = evaluations(w)
    edited = tmp / f"task{task}/eval.parquet"
    edited.parent.mkdir(parents=True)
    frame, prov = pd.read_parquet(paths[task]), io.read_parquet_provenance(paths[task])
    change(frame, prov)
    io.write_parquet(edited, frame, prov)
    return [edited if t == task else path for t, path in enumerate(paths)]


def damaged_eval(w: World, tmp: Path, content: bytes | None) -> list[Path]:
    """The run's evaluations, that of task 1 replaced by `content` (None: no such file)."""
    paths = evaluations(w)
    damaged = tmp / "task1/eval.parquet"
    damaged.parent.mkdir(parents=True)
    if content is not None:
        damaged.write_bytes(content)
    return [paths[0], damaged]


def summarize_call(w: World, tmp: Path, evals: list[Path]) -> Call:
    outputs = [tmp / "out" / name for name in RUN_FILES]
    args = options(config=w.config, eval=evals, out_metrics=outputs[0], out_matrix=outputs[1], out_curves=outputs[2])
    return Call(["summarize", *args], outputs)


def report_call(w: World, tmp: Path, damage: str = "", content: bytes = b"", ledger: str = '{"entries": []}') -> Call:
    """`report` of the run's summary, the file `damage` (a RUN_FILES name) replaced by `content`."""
    files = dict(run_summary(w))
    if damage:
        files[damage] = tmp / damage
        files[damage].write_bytes(content)
    tables, plots = tmp / "tables", tmp / "plots"
    args = options(
        metrics=files["metrics.parquet"], matrix=files["accuracy_matrix.csv"], curves=files["curves.parquet"],
        ledger=ledger, tables_dir=tables, plots_dir=plots,
    )  # fmt: skip
    return Call(["report", *args], [tables / f"summary.{suffix}" for suffix in ("parquet", "csv", "md", "html")])


def with_resume(w: World, tmp: Path, content: object) -> Call:
    """Training task 0 with `content` where its resume file is (bytes as they are, else torch-saved)."""
    call = train(w, tmp)
    resume = tmp / "resume/task0.pt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(content) if isinstance(content, bytes) else torch.save(content, resume)
    return call


def duplicated_row(frame: pd.DataFrame, prov: dict) -> None:
    frame.loc[len(frame)] = frame.iloc[0]


def text_accuracy(frame: pd.DataFrame, prov: dict) -> None:
    frame["acc_til"] = frame["acc_til"].map(str)


def another_run(frame: pd.DataFrame, prov: dict) -> None:
    prov["run_id"] = "finetune/default/seed1"


RESULT_FILE_CASES = [
    # evaluations read by summarize
    Case("a missing evaluation file", lambda w, t: summarize_call(w, t, damaged_eval(w, t, None)),
         "task1/eval.parquet: evaluation file missing (the summary of finetune/default/seed0 reads it)"),
    Case("a zero-byte evaluation file", lambda w, t: summarize_call(w, t, damaged_eval(w, t, b"")),
         "task1/eval.parquet: not a parquet evaluation file"),
    Case("a text evaluation file", lambda w, t: summarize_call(w, t, damaged_eval(w, t, b"task_eval,acc_til\n0,90\n")),
         "task1/eval.parquet: not a parquet evaluation file"),
    Case("an evaluation with a duplicated row", lambda w, t: summarize_call(w, t, edited_eval(w, t, 1, duplicated_row)),
         "task1/eval.parquet: rows for tasks [0, 1, 0] after task [1]; expected one row per task [0, 1] after task 1"),
    Case("an evaluation without its accuracy column", lambda w, t: summarize_call(w, t, edited_eval(w, t, 0, lambda f, p: f.pop("acc_cil"))),
         "task0/eval.parquet: no 'acc_cil' column"),
    Case("an accuracy that is text", lambda w, t: summarize_call(w, t, edited_eval(w, t, 1, text_accuracy)),
         "task1/eval.parquet: column 'acc_til' holds"),
    Case("an evaluated task out of range", lambda w, t: summarize_call(w, t, edited_eval(w, t, 0, lambda f, p: f.__setitem__("task_eval", 7))),
         "task0/eval.parquet: rows for tasks [7] after task [0]"),
    Case("another run's evaluation", lambda w, t: summarize_call(w, t, edited_eval(w, t, 0, another_run)),
         "task0/eval.parquet: evaluation of run 'finetune/default/seed1', not of this run 'finetune/default/seed0'"),
    Case("evaluations out of task order", lambda w, t: summarize_call(w, t, evaluations(w)[::-1]),
         "task1/eval.parquet: evaluation after task 1, expected task 0 (files in task order)"),
    Case("a summary whose matrix cannot be written leaves no metrics",
         lambda w, t: with_patch(summarize_call(w, t, evaluations(w)), failing("replace", errno.ENOSPC, "accuracy_matrix.csv")),
         "accuracy_matrix.csv: cannot write: no space left on device"),
    # summaries and the ledger read by report
    Case("a zero-byte metrics file", lambda w, t: report_call(w, t, "metrics.parquet"), "metrics.parquet: not a readable parquet metrics file"),
    Case("a text curves file", lambda w, t: report_call(w, t, "curves.parquet", b"after_task,acc\n0,90\n"),
         "curves.parquet: not a readable parquet curves file"),
    Case("a garbage accuracy matrix", lambda w, t: report_call(w, t, "accuracy_matrix.csv", b"\x00\x01\x02garbage"),
         "accuracy_matrix.csv: expected an accuracy matrix with columns"),
    Case("a ledger that is a list", lambda w, t: report_call(w, t, ledger="[]"), "--ledger: expected a JSON object with an 'entries' list"),
    Case("a ledger that is not JSON", lambda w, t: report_call(w, t, ledger="{entries: [}"), "--ledger: expected the ledger as JSON"),
    Case("a report whose plots cannot be written leaves no summary",
         lambda w, t: with_patch(report_call(w, t), failing("replace", errno.ENOSPC, "accuracy_matrix.png")),
         "accuracy_matrix.png: cannot write: no space left on device"),
    # resume files read by a training job
    Case("a resume file that is not a torch file", lambda w, t: with_resume(w, t, b"half a resume"),
         "resume/task0.pt: not a readable torch file"),
    Case("a resume file that is a list", lambda w, t: with_resume(w, t, [1, 2]),
         "resume/task0.pt: not a resume file (expected a mapping); delete it to start the task afresh"),
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES + RESULT_FILE_CASES, ids=[c.id for c in CLI_CASES + RESULT_FILE_CASES])
def test_a_bad_input_is_one_error_line_and_leaves_no_output(world, tmp_path, case):
    call = case.setup(world, tmp_path)
    answer = run(call, tmp_path)
    expect = case.expect.replace("{tmp}", str(tmp_path))
    story = f"exit {answer.status}\nstderr:\n{answer.stderr}\nstdout:\n{answer.stdout[-2000:]}"
    assert answer.status == case.status, story
    if case.status == 1:
        assert answer.stderr.splitlines() == [answer.stderr.strip()], story
        assert answer.stderr.startswith("sparsecl: error: "), story
    else:
        assert "Traceback" not in answer.stderr, story
        errors = [line for line in answer.stderr.splitlines() if "error:" in line.lower()]
        assert len(errors) == 1, story
    assert expect in answer.stderr, story
    for path in call.outputs:
        assert not path.exists(), f"{path} was left behind\n{story}"
        if path.parent.is_dir():
            assert not list(path.parent.glob(".*.tmp")), f"a temporary file was left next to {path}"


# ---------------------------------------------------------------- config mistakes (DAG-build time)

SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
BASE = {
    "seeds": [0],
    "experiments": {
        "ft": {"method": "finetune", "dataset": "digits", "scenario": {"num_tasks": 2, "classes_per_task": 2}}
    },
}


def plan_like_the_workflow(config: dict, schema: dict = SCHEMA) -> None:
    """What workflow/rules/common.smk does with the config before it builds the DAG."""
    config = validate(config, schema)
    plan_ledger(config, plan_runs(config, schema))
    check_overrides(config["data"]["sources"])


def experiment(**settings) -> Callable[[dict], None]:
    return lambda config: config["experiments"]["ft"].update(settings)


def reported(**entry) -> Callable[[dict], None]:
    value = {} if "curve" in entry else {"value": 90.0}
    return experiment(reported=[{"kind": "table", "metric": "acc_til", "source": "Table 1", **value, **entry}])


CONFIG_CASES = [
    ("unknown key", experiment(colour="red"), "experiments.ft.colour: unknown key; allowed: backbone, backbone_args"),
    ("unknown top-level key", lambda c: c.update(device_count=2), "device_count: unknown key"),
    ("bad method", experiment(method="ewc"), "experiments.ft.method: 'ewc' is not allowed; expected one of: finetune"),
    ("bad dataset", experiment(dataset="svhn"), "experiments.ft.dataset: 'svhn' is not allowed; expected one of: digits"),
    ("density above 1", experiment(method="dst", method_args={"density": 1.5}), "experiments.ft.method_args.density: 1.5 is greater than the maximum of 1"),
    ("lr of 0", experiment(train={"lr": 0}), "experiments.ft.train.lr: 0 is less than or equal to the minimum of 0"),
    ("epochs: abc", experiment(train={"epochs": "abc"}), "experiments.ft.train.epochs: 'abc' is not of type 'integer'"),
    ("augment: yes", experiment(train={"augment": "yes"}), "experiments.ft.train.augment: 'yes' is not of type 'boolean'"),
    ("impossible scenario", experiment(scenario={"num_tasks": 6, "classes_per_task": 2}),
     "experiments.ft.scenario: num_tasks x classes_per_task = 6 x 2 = 12 exceeds the dataset's 10 classes"),
    ("bad grid key", experiment(grid={"lr": [0.1]}), "experiments.ft.grid: 'lr' does not match"),
    ("grid value out of range", experiment(method="dst", grid={"method_args.density": [0.1, 2]}), "experiments.ft.method_args.density: 2 is greater than"),
    ("grid keys with one last component", experiment(grid={"train.lr": [0.1], "method_args.lr": [0.1]}, method="focil"),
     "experiments.ft.grid: keys must differ in their last component"),
    ("reported curve of the wrong length", reported(curve=[90.0]), "experiments.ft.reported.0.curve: expected 2 values (one per task), got 1"),
    ("reported point not in the grid", reported(point="lr=0.5"), "experiments.ft.reported.0.point: 'lr=0.5' is not a grid point of ft"),
    ("reported figure without uncertainty", reported(kind="figure"), "experiments.ft.reported.0: 'uncertainty' is a required property"),
    ("reported bad metric", reported(metric="accuracy"), "experiments.ft.reported.0.metric: 'accuracy' does not match"),
    ("backbone_args hidden: abc", experiment(backbone_args={"hidden": "abc"}), "experiments.ft.backbone_args.hidden: 'abc' is not of type 'array'"),
    ("backbone_args hidden of zero", experiment(backbone_args={"hidden": [32, 0]}), "experiments.ft.backbone_args.hidden.1: 0 is less than the minimum of 1"),
    ("unknown backbone argument", experiment(backbone_args={"depth": 3}), "experiments.ft.backbone_args.depth: unknown key; allowed: bias, hidden"),
    ("backbone_args bias: yes", experiment(backbone_args={"bias": "yes"}), "experiments.ft.backbone_args.bias: 'yes' is not of type 'boolean'"),
    ("resnet18 width of 0", experiment(backbone="resnet18", backbone_args={"width": 0}), "experiments.ft.backbone_args.width: 0 is less than the minimum of 1"),
    ("an mlp argument for resnet18", experiment(backbone="resnet18", backbone_args={"hidden": [8]}), "experiments.ft.backbone_args.hidden: unknown key; allowed: width"),
    ("an argument for a seed backbone", experiment(backbone="resnet18_seed", backbone_args={"width": 32}), "experiments.ft.backbone_args.width: unknown key; allowed: none"),
    ("source with both url and path", lambda c: c.update(data={"sources": {"cifar10": {"url": "http://a", "path": "/b"}}}),
     "data.sources.cifar10: set either url or path, not both"),
    # numbers that are not numbers, and integers written as decimals
    ("lr: .nan", experiment(train={"lr": float("nan")}), "experiments.ft.train.lr: nan is not allowed; expected a finite number"),
    ("lr: .inf", experiment(train={"lr": float("inf")}), "experiments.ft.train.lr: inf is not allowed; expected a finite number"),
    ("momentum: .nan", experiment(train={"momentum": float("nan")}), "experiments.ft.train.momentum: nan is not allowed"),
    ("weight_decay: .inf", experiment(train={"weight_decay": float("inf")}), "experiments.ft.train.weight_decay: inf is not allowed"),
    ("density: -.inf", experiment(method="dst", method_args={"density": float("-inf")}), "experiments.ft.method_args.density: -inf is not allowed"),
    ("report.tolerance: .nan", lambda c: c.update(report={"tolerance": float("nan")}), "report.tolerance: nan is not allowed"),
    ("reported value: .nan", reported(value=float("nan")), "experiments.ft.reported.0.value: nan is not allowed"),
    ("num_tasks: 2.0", experiment(scenario={"num_tasks": 2.0}), "experiments.ft.scenario.num_tasks: 2.0 is not an integer; write it without a decimal point"),
    ("epochs: 1.0", experiment(train={"epochs": 1.0}), "experiments.ft.train.epochs: 1.0 is not an integer"),
    ("seeds: [0.0]", lambda c: c.update(seeds=[0.0]), "seeds.0: 0.0 is not an integer"),
    ("gpus_per_job: -1", lambda c: c.update(gpus_per_job=-1), "gpus_per_job: -1 is not allowed; expected 'auto' or an integer >= 0"),
    ("report.decimals: -1", lambda c: c.update(report={"decimals": -1}), "report.decimals: -1 is less than the minimum of 0"),
    # settings that contradict each other
    ("a task-incremental method on data steps", experiment(method="dst", scenario={"kind": "data", "num_tasks": 2, "chunks": [1, 1]}),
     "experiments.ft.scenario.kind: 'data' is not allowed; dst is task-incremental: it needs kind: class."),
    ("PackNet on data steps", experiment(method="packnet", scenario={"kind": "data", "num_tasks": 2, "chunks": [1, 1]}),
     "experiments.ft.scenario.kind: 'data' is not allowed; packnet is task-incremental"),
    ("FOCIL on data steps", experiment(method="focil", scenario={"kind": "data", "num_tasks": 2, "chunks": [1, 1]}),
     "experiments.ft.scenario.kind: 'data' is not allowed; focil is class-incremental"),
    ("multistep on classes", experiment(method="multistep"), "experiments.ft.scenario.kind: 'class' is not allowed; multistep needs a data-incremental"),
    ("chunks of a class-incremental scenario", experiment(scenario={"num_tasks": 2, "chunks": [1, 1]}),
     "experiments.ft.scenario.chunks: only a data-incremental scenario (kind: data) has chunks"),
    ("two paper names with one file name", lambda c: c["experiments"].update(
        a={**BASE["experiments"]["ft"], "paper": "Tickets (2021)"}, b={**BASE["experiments"]["ft"], "paper": "tickets 2021"}),
     "share the file name 'tickets-2021'; expected paper names that differ in letters or digits"),
]  # fmt: skip


@pytest.mark.parametrize("mutate, message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_a_config_mistake_is_one_config_error_line(mutate, message):
    config = copy.deepcopy(BASE)
    mutate(config)
    with pytest.raises(ConfigError) as err:
        plan_like_the_workflow(config)
    line = f"config error: {err.value}"  # as workflow/rules/common.smk reports it
    assert "\n" not in line
    assert message in line


def test_a_backbone_without_a_block_of_its_own_still_needs_a_mapping():
    schema = copy.deepcopy(SCHEMA)
    schema["$defs"]["experiment"]["properties"]["backbone"]["enum"].append("a_new_backbone")
    config = copy.deepcopy(BASE)
    config["experiments"]["ft"].update(backbone="a_new_backbone", backbone_args={"depth": 110})
    assert validate(config, schema)["experiments"]["ft"]["backbone_args"] == {"depth": 110}
    config["experiments"]["ft"]["backbone_args"] = "deep"
    with pytest.raises(ConfigError, match="experiments.ft.backbone_args: 'deep' is not of type 'object'"):
        validate(config, schema)


@pytest.mark.slow
def test_snakemake_stops_on_a_bad_backbone_argument_before_any_job(tmp_path):
    from .workflow_helpers import snakemake, write_config

    config = copy.deepcopy(BASE)
    config["experiments"]["ft"]["backbone_args"] = {"hidden": "abc"}
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "all", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "config error:" in line]
    assert result.returncode != 0
    assert len(lines) == 1 and "experiments.ft.backbone_args.hidden: 'abc' is not of type 'array'" in lines[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "text, line",
    [
        ("experiments:\n  ft: {method: finetune}\n  ft: {method: dst}\n", "line 3: duplicate key 'ft'"),
        ("seeds: [0]\ntrain: {lr: 0.1, lr: 0.5}\n", "line 2: duplicate key 'lr'"),
    ],
    ids=["an experiment named twice", "a setting given twice"],
)
def test_a_config_file_that_repeats_a_key_is_refused_with_its_line(tmp_path, text, line):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        check_config_files([path])
    assert str(err.value).startswith(f"{path}, {line}")


@pytest.mark.slow
def test_snakemake_stops_on_a_repeated_experiment_name_and_on_a_results_file(tmp_path):
    from .workflow_helpers import snakemake, write_config

    write_config(tmp_path, BASE)
    text = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(text + "  ft:\n    method: joint\n    dataset: digits\n")
    result = snakemake(tmp_path, "-n", "all", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "config error:" in line]
    assert result.returncode != 0 and len(lines) == 1 and "duplicate key 'ft'" in lines[0], result.stderr
    assert 'File "' not in result.stderr  # no traceback of the Snakefile

    write_config(tmp_path, BASE)
    (tmp_path / "results").write_text("not a directory")
    result = snakemake(tmp_path, "all", "--cores", "1", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "results: expected a writable directory for the run's outputs"
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr


@pytest.mark.slow
def test_a_hand_edited_run_config_stops_its_jobs_and_the_advice_given_remakes_it(tmp_path):
    from sparsecl.config import dump_run_config, load_run_config

    from .workflow_helpers import snakemake, write_config

    config = copy.deepcopy(BASE)
    config["experiments"]["ft"]["train"] = {"epochs": 1}
    write_config(tmp_path, config)
    target = "results/runs/ft/default/seed0/task0/model.pt"
    snakemake(tmp_path, target, "--cores", "1")
    run_file = tmp_path / "results/runs/ft/default/seed0/config.yaml"
    edited = dataclasses.replace(
        load_run_config(run_file), train=dataclasses.replace(load_run_config(run_file).train, lr=0.5)
    )
    run_file.write_text(dump_run_config(edited))  # an edit that recomputes the file's own hash
    result = snakemake(tmp_path, target, "--cores", "1", check=False)
    assert result.returncode != 0
    log = (tmp_path / "results/logs").rglob("task0.log")
    refusal = [
        line
        for path in log
        for line in path.read_text().splitlines()
        if "not what the workflow config resolves to" in line
    ]
    assert refusal and "remove it and rerun snakemake" in refusal[-1]
    run_file.unlink()  # the advice, followed literally
    snakemake(tmp_path, target, "--cores", "1")
    assert load_run_config(run_file).train.lr == 0.05


# ---------------------------------------------------------------- further config and option refusals
# Mistakes that once produced numbers (a repeated run, a note or class order ignored, a thread
# count of zero), an internal error (a synthetic dataset of no images) or a vague answer ("failed
# after 0 attempts", a bare regular expression).

MORE_CONFIG_CASES = [
    ("a seed given twice", lambda c: c.update(seeds=[0, 0]), "seeds: [0, 0] repeats a value; expected each value once"),
    ("an experiment's seed given twice", experiment(seeds=[1, 2, 1]), "experiments.ft.seeds: [1, 2, 1] repeats a value"),
    ("a grid value given twice", experiment(grid={"train.lr": [0.1, 0.1]}), "experiments.ft.grid.train.lr: [0.1, 0.1] repeats a value"),
    ("grid values that make one point name", experiment(grid={"train.lr": [0.1, 0.1000001]}),
     "experiments.ft.grid: [0.1] and [0.1000001] both name the point 'lr=0.1'"),
    ("grid values that make one point name across keys", experiment(method="dst", grid={"method_args.density": [0.2, 0.2000001], "train.lr": [0.1]}),
     "experiments.ft.grid: [0.2, 0.1] and [0.2000001, 0.1] both name the point 'density=0.2,lr=0.1'"),
    # settings that would be ignored without a word
    ("a note for a paper no experiment reproduces", lambda c: (experiment(paper="Tickets (2021)")(c), c.update(papers={"Tickets 2021": {"note": "n"}})),
     "papers.Tickets 2021: no experiment reproduces 'Tickets 2021', so its note would be lost; expected one of: Tickets (2021)"),
    ("a class order on data steps", experiment(method="multistep", scenario={"kind": "data", "num_tasks": 2, "chunks": [1, 1], "class_order": "permuted"}),
     "experiments.ft.scenario.class_order: a data-incremental scenario (kind: data) has every class in every step"),
    ("a stage's learning rate of NaN", experiment(method="multistep", scenario={"kind": "data", "num_tasks": 2, "chunks": [1, 1]}, method_args={"stage_train": {"sst": {"lr": float("nan")}}}),
     "experiments.ft.method_args.stage_train.sst.lr: nan is not allowed; expected a finite number"),
    ("a stage of no epochs", experiment(method="multistep", scenario={"kind": "data", "num_tasks": 2, "chunks": [1, 1]}, method_args={"stage_train": {"aod": {"epochs": 0}}}),
     "experiments.ft.method_args.stage_train.aod.epochs: 0 is less than the minimum of 1"),
    # a pattern or a reserved word said in words
    ("a device the config cannot name", lambda c: c.update(device="tpu"), "device: 'tpu' does not match '^(auto|cpu|cuda(:[0-9]+)?)$'; expected auto, cpu, cuda or cuda:N"),
    ("a config named like a results folder", lambda c: c.update(name="runs"), "name: 'runs' is reserved; expected a name other than: runs, tables"),
    ("an experiment name with a space", lambda c: c["experiments"].update({"my ft": c["experiments"].pop("ft")}),
     "experiments: 'my ft' does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'; expected letters, digits, - and _"),
    ("a claim about an experiment without its point", reported(kind="claim", claim="c", left="ft", op=">=", right="ft/default"),
     "experiments.ft.reported.0.left: 'ft' does not match '^[^/]+/[^/]+$'; expected experiment/point"),
]  # fmt: skip


@pytest.mark.parametrize("mutate, message", [c[1:] for c in MORE_CONFIG_CASES], ids=[c[0] for c in MORE_CONFIG_CASES])
def test_a_config_that_repeats_a_run_or_a_setting_it_ignores_is_one_config_error_line(mutate, message):
    test_a_config_mistake_is_one_config_error_line(mutate, message)


def synth(tmp: Path, **values) -> Call:
    out = tmp / "synth"
    return Call(["data", "synth", "cifar10", *options(out=out, **values)], [out])


def retrying(tmp: Path, retries: int) -> Call:
    out = tmp / "raw" / "cifar-10-python.tar.gz"
    return Call(["data", "download", "cifar10", *options(file=out.name, out=out, retries=retries)], [out])


def serve(tmp: Path, idle: str) -> Call:
    socket = tmp / "stages.sock"
    return Call(["serve", *options(socket=socket, idle=idle)], [socket])


MORE_CLI_CASES = [
    Case("train with no threads", lambda w, t: train(w, t, threads=0), "Invalid value for '--threads'", 2),
    Case("evaluate with a negative thread count", lambda w, t: evaluate(w, t, threads=-4), "Invalid value for '--threads'", 2),
    Case("synthetic data without training images", lambda w, t: synth(t, train_per_class=0), "Invalid value for '--train-per-class'", 2),
    Case("synthetic data without test images", lambda w, t: synth(t, test_per_class=-1), "Invalid value for '--test-per-class'", 2),
    Case("a download with negative retries", lambda w, t: retrying(t, -1), "Invalid value for '--retries'", 2),
    Case("a stage server that idles no time", lambda w, t: serve(t, "0"), "Invalid value for '--idle'", 2),
    Case("a stage server idling NaN seconds", lambda w, t: serve(t, "nan"), "Invalid value for '--idle'", 2),
    # a run config written or edited outside the workflow
    Case("a run config with lr: .nan, its hash recomputed", lambda w, t: train(w, t, config=run_config(w, t, setting("train", "lr", float("nan")))),
         "config.yaml: train.lr: nan is not allowed; expected a finite number"),
    Case("a run config with a batch size of 0", lambda w, t: train(w, t, config=run_config(w, t, setting("train", "batch_size", 0))),
         "config.yaml: train.batch_size: expected an integer >= 1, got 0"),
    Case("run-config --json with an infinite momentum", lambda w, t: run_config_call(w, t, run_json(w, setting("train", "momentum", float("inf")))),
         "train.momentum: inf is not allowed; expected a finite number"),
    Case("run-config --json with a NaN method argument", lambda w, t: run_config_call(w, t, run_json(w, setting("", "method_args", {"density": float("nan")}))),
         "method_args.density: nan is not allowed"),
]  # fmt: skip


@pytest.mark.parametrize("case", MORE_CLI_CASES, ids=[c.id for c in MORE_CLI_CASES])
def test_an_option_out_of_its_range_is_one_error_line_and_leaves_no_output(world, tmp_path, case):
    test_a_bad_input_is_one_error_line_and_leaves_no_output(world, tmp_path, case)
