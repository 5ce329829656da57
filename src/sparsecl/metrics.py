"""Continual-learning metrics from the accuracy matrix R, where R[i, j] is the accuracy (%) on
task j after training task i (defined for j <= i).

  ACC (average accuracy)   = mean_j R[T-1, j]
  BWT (backward transfer)  = mean_{j<T-1} (R[T-1, j] - R[j, j])                    (Lopez-Paz & Ranzato)
  forgetting               = mean_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j])          (Chaudhry et al.)
  learning accuracy (LA)   = mean_j R[j, j]

With a single task, BWT and forgetting are 0 by convention (nothing can be forgotten).
"""

from __future__ import annotations

import numpy as np


def accuracy_matrix(rows: list[dict], key: str, num_tasks: int, num_columns: int | None = None) -> np.ndarray:
    """Assemble R from evaluation rows {task_trained, task_eval, <key>}; unset cells are NaN.

    `num_columns` < `num_tasks` for data-incremental runs, whose steps all score one test set.
    """
    matrix = np.full((num_tasks, num_tasks if num_columns is None else num_columns), np.nan)
    for row in rows:
        matrix[int(row["task_trained"]), int(row["task_eval"])] = float(row[key])
    return matrix


def average_accuracy(R: np.ndarray) -> float:
    return float(np.mean(R[-1, :]))


def backward_transfer(R: np.ndarray) -> float:
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forgetting(R: np.ndarray) -> float:
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([np.max(R[: T - 1, j][j:]) - R[-1, j] for j in range(T - 1)]))


def learning_accuracy(R: np.ndarray) -> float:
    return float(np.mean(np.diag(R)))


def summarize_matrix(R: np.ndarray) -> dict[str, float]:
    if np.isnan(np.tril(R)[np.tril_indices(R.shape[0])]).any():
        raise ValueError("accuracy matrix has missing entries on or below the diagonal")
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "forgetting": forgetting(R),
        "learning_acc": learning_accuracy(R),
    }
