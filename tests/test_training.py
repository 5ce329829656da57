"""Training stages: reproducible on CPU, resumable mid-task, chained task by task."""

import pandas as pd
import pytest
import torch

from sparsecl import stages
from sparsecl.io import load_torch
from sparsecl.methods import training

from .stage_helpers import evaluate_task, kill_in_epoch, make_run, train_task


def state_of(task_dir):
    return load_torch(task_dir / "model.pt")["state_dict"]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_config_and_seed_give_identical_weights_and_metrics(tmp_path):
    config, data, scenario = make_run(tmp_path)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        for task in range(2):
            train_task(config, data, scenario, task, out)
        runs.append((state_of(out / "task1"), pd.read_parquet(evaluate_task(config, data, scenario, 1, out))))
    assert_same_state(runs[0][0], runs[1][0])
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])


def test_a_different_seed_gives_different_weights(tmp_path):
    config0, data, scenario = make_run(tmp_path, seed=0)
    config1, _, _ = make_run(tmp_path, seed=1)
    a = state_of(train_task(config0, data, scenario, 0, tmp_path / "a"))
    b = state_of(train_task(config1, data, scenario, 0, tmp_path / "b"))
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])


def test_a_job_killed_mid_task_resumes_and_ends_identical(tmp_path, monkeypatch):
    config, data, scenario = make_run(tmp_path, train={"epochs": 4})
    reference = state_of(train_task(config, data, scenario, 0, tmp_path / "uninterrupted"))

    restore_epochs = kill_in_epoch(monkeypatch, epoch=3)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_task(config, data, scenario, 0, out)
    assert not (out / "task0" / "model.pt").exists()  # no partial output
    assert (out / "resume" / "task0.pt").exists()  # but the completed epochs are kept

    restore_epochs()
    resumed = train_task(config, data, scenario, 0, out)
    assert_same_state(reference, state_of(resumed))
    assert pd.read_parquet(resumed / "train_log.parquet")["epoch"].tolist() == [0, 1, 2, 3]
    assert not (out / "resume" / "task0.pt").exists()  # cleaned up once the task is done


def test_a_task_job_evaluates_what_it_saved_and_a_failed_evaluation_does_not_retrain(tmp_path, monkeypatch):
    config, data, scenario = make_run(tmp_path, train={"epochs": 2})
    separate = tmp_path / "separate"
    for task in (0, 1):
        train_task(config, data, scenario, task, separate)
        evaluate_task(config, data, scenario, task, separate)
    out = tmp_path / "job"
    train_task(config, data, scenario, 0, out, evaluate=True)

    def evaluation_dies(*args, **kwargs):
        raise RuntimeError("evaluation died")

    with monkeypatch.context() as patch:
        patch.setattr(stages, "evaluate", evaluation_dies)
        with pytest.raises(RuntimeError, match="evaluation died"):
            train_task(config, data, scenario, 1, out, evaluate=True)
    assert (out / "resume/task1.pt").exists()  # kept: the training need not be redone

    epochs = []
    real_epoch = training.train_epoch

    def counted_epoch(*args, **kwargs):
        epochs.append(kwargs.get("epoch"))
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", counted_epoch)
    train_task(config, data, scenario, 1, out, evaluate=True)
    assert epochs == [] and not (out / "resume/task1.pt").exists()
    for task in (0, 1):  # the same rows as a separate evaluation of the same files
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / f"task{task}/eval.parquet"), pd.read_parquet(separate / f"task{task}/eval.parquet")
        )


def test_task_t_continues_from_task_t_minus_1(tmp_path):
    config, data, scenario = make_run(tmp_path, train={"epochs": 1})
    out = tmp_path / "run"
    first = state_of(train_task(config, data, scenario, 0, out))
    second = state_of(train_task(config, data, scenario, 1, out))
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])
    rows = pd.read_parquet(evaluate_task(config, data, scenario, 1, out))
    assert rows["task_eval"].tolist() == [0, 1]
    assert rows["task_trained"].tolist() == [1, 1]


def test_a_dense_method_scores_each_test_image_once_for_both_accuracies():
    from types import SimpleNamespace

    import numpy as np

    from sparsecl.engine import DeviceData
    from sparsecl.methods import EvalContext, get_method

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.images = torch.nn.Linear(4, 4), 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.images += len(x)
            return self.linear(x.flatten(1))

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    data = DeviceData.from_numpy(np.zeros((8, 2, 2, 1), np.uint8), labels, [0.5], [0.25], torch.device("cpu"))
    scenario = SimpleNamespace(tasks=[[0, 1], [2, 3]], spec=SimpleNamespace(kind="class"))
    run = SimpleNamespace(train=SimpleNamespace(eval_batch_size=3))
    model = Counting()
    ctx = EvalContext(run, 1, scenario, data, torch.device("cpu"), None, model, [{}, {}], {})
    rows = get_method("finetune").evaluate(ctx)
    assert [row["n"] for row in rows] == [4, 4] and model.images == 8  # not 16: task-IL and class-IL share the logits
