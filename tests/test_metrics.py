"""Evaluation metrics give the numbers the literature's protocols define."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import (
    best_threshold,
    cmc,
    kfold_accuracy,
    roc_auc,
    tar_at_far,
    threshold_at_far,
)


def test_separable_scores_give_perfect_accuracy_and_auc() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0] * 10)
    same = np.array([1, 1, 1, 0, 0, 0] * 10, bool)
    assert kfold_accuracy(scores, same)["accuracy"] == 1.0
    assert roc_auc(scores, same) == pytest.approx(1.0)
    threshold, accuracy = best_threshold(scores, same)
    assert 0.2 < threshold < 0.7 and accuracy == 1.0


def test_threshold_is_chosen_on_the_other_folds() -> None:
    # Fold 0 alone would be perfect at 0.55; the other folds put the threshold at 0.35,
    # where fold 0's impostor at 0.5 is falsely accepted.
    scores = np.array([0.6, 0.5] + [0.4, 0.3, 0.45, 0.32] * 2)
    same = np.array([1, 0] + [1, 0, 1, 0] * 2, bool)
    folds = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    result = kfold_accuracy(scores, same, folds)
    assert result["accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_tar_at_far_counts_impostors_above_the_threshold() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0, 0.1, 10_000)
    genuine = rng.normal(0.5, 0.1, 1_000)
    threshold = threshold_at_far(impostor, 0.01)
    assert np.mean(impostor >= threshold) <= 0.01
    assert np.mean(impostor >= threshold - 0.01) > 0.008
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(1000, bool), np.zeros(10_000, bool)])
    tar = tar_at_far(scores, same, (0.1, 0.01, 1e-5))
    assert tar["0.1"] >= tar["0.01"] > 0.9
    assert tar["1e-05"] is None  # 10,000 impostors cannot measure a FAR of 1e-5


def test_cmc_ranks_the_true_subject() -> None:
    similarity = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.9]])
    curve = cmc(similarity, np.array([0, 1, 1]), np.array([0, 1, 2]), max_rank=3)
    assert curve.tolist() == pytest.approx([1 / 3, 1.0, 1.0])
