"""Continual-learning metrics against accuracy matrices computed by hand."""

import numpy as np
import pytest

from sparsecl.metrics import accuracy_matrix, backward_transfer, forgetting, learning_accuracy, summarize_matrix

# R[i, j]: accuracy on task j after training task i (upper triangle undefined).
R = np.array(
    [
        [90.0, np.nan, np.nan],
        [60.0, 80.0, np.nan],
        [50.0, 70.0, 85.0],
    ]
)


def test_average_accuracy_is_the_mean_of_the_last_row():
    assert summarize_matrix(R)["acc"] == pytest.approx((50 + 70 + 85) / 3)


def test_backward_transfer_compares_final_with_just_learned_accuracy():
    # ((50 - 90) + (70 - 80)) / 2
    assert backward_transfer(R) == pytest.approx(-25.0)


def test_forgetting_uses_the_best_earlier_accuracy_of_each_old_task():
    # task 0: max(90, 60) - 50 = 40 ; task 1: max(80) - 70 = 10
    assert forgetting(R) == pytest.approx(25.0)


def test_forgetting_differs_from_bwt_when_a_task_improved_before_dropping():
    R2 = np.array([[40.0, np.nan, np.nan], [70.0, 90.0, np.nan], [60.0, 90.0, 80.0]])
    assert backward_transfer(R2) == pytest.approx(((60 - 40) + (90 - 90)) / 2)  # +10: positive transfer
    assert forgetting(R2) == pytest.approx(((70 - 60) + (90 - 90)) / 2)  # 5: it still forgot from its peak


def test_learning_accuracy_is_the_mean_of_the_diagonal():
    assert learning_accuracy(R) == pytest.approx((90 + 80 + 85) / 3)


def test_a_single_task_has_nothing_to_forget():
    single = np.array([[77.0]])
    assert summarize_matrix(single) == {"acc": 77.0, "bwt": 0.0, "forgetting": 0.0, "learning_acc": 77.0}


def test_accuracy_matrix_is_assembled_from_evaluation_rows():
    rows = [{"task_trained": i, "task_eval": j, "acc_til": R[i, j]} for i in range(3) for j in range(i + 1)]
    np.testing.assert_array_equal(accuracy_matrix(rows, "acc_til", 3), R)


def test_missing_entries_below_the_diagonal_are_an_error():
    broken = R.copy()
    broken[2, 0] = np.nan
    with pytest.raises(ValueError, match="missing"):
        summarize_matrix(broken)
