"""Verification and identification metrics, as the face-recognition literature computes them.

- LFW-style accuracy: k folds; each fold is scored at the threshold that is best on the other
  k-1 folds; mean and std over folds.
- TAR@FAR: the threshold that lets a fraction FAR of impostor scores through, and the
  fraction of genuine scores at or above it.
- ROC AUC, and CMC / Rank-k for identification against per-subject templates.
"""

from __future__ import annotations

import numpy as np


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `score >= threshold` <=> same."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order].astype(bool)
    # Accepting the top i scores: true accepts cumsum(y)[i-1], true rejects = negatives below.
    accepted_pos = np.concatenate([[0], np.cumsum(y)])
    rejected_neg = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    correct = accepted_pos + rejected_neg
    # Only cut between distinct scores.
    valid = np.concatenate([[True], s[1:] != s[:-1], [True]])
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        threshold = s[0] + 1e-6
    elif i == len(s):
        threshold = s[-1] - 1e-6
    else:
        threshold = (s[i - 1] + s[i]) / 2
    return float(threshold), float(correct[i] / len(s))


def kfold_accuracy(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None, k: int = 10
) -> dict[str, float]:
    """Mean and std of per-fold accuracy, each fold at the threshold best on the others."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if folds is None:
        folds = np.arange(len(scores)) * k // len(scores)
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], same[~test])
        accuracies.append(np.mean((scores[test] >= threshold) == same[test]))
        thresholds.append(threshold)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
    }


def threshold_at_far(impostor_scores: np.ndarray, far: float) -> float:
    """The smallest threshold whose false accept rate (score >= threshold) is at most `far`."""
    s = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    allowed = int(np.floor(far * len(s)))
    if allowed >= len(s):
        return float(s[-1])
    # Accept strictly above the (allowed)-th highest impostor score.
    return float(np.nextafter(s[allowed], np.inf))


def tar_at_far(
    scores: np.ndarray, same: np.ndarray, fars: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
) -> dict[str, float | None]:
    """TAR at each FAR; None where there are too few impostor pairs to measure that FAR."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    genuine, impostor = scores[same], scores[~same]
    result: dict[str, float | None] = {}
    for far in fars:
        key = f"{far:g}"
        if len(impostor) * far < 1:
            result[key] = None
            continue
        result[key] = float(np.mean(genuine >= threshold_at_far(impostor, far)))
    return result


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at every distinct threshold, from strict to lax."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    y = np.asarray(same, bool)[order]
    tar = np.concatenate([[0], np.cumsum(y)]) / max(y.sum(), 1)
    far = np.concatenate([[0], np.cumsum(~y)]) / max((~y).sum(), 1)
    return far, tar


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    far, tar = roc_curve(scores, same)
    return float(np.trapezoid(tar, far))


def cmc(
    similarity: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, max_rank: int = 10
) -> np.ndarray:
    """Cumulative match curve: cmc[r-1] = fraction of probes whose subject is in the top r."""
    ranked = np.argsort(-similarity, axis=1, kind="stable")[:, :max_rank]
    hits = np.asarray(gallery_labels)[ranked] == np.asarray(probe_labels)[:, None]
    first = np.where(hits.any(1), hits.argmax(1), max_rank)
    return np.array([(first < r).mean() for r in range(1, max_rank + 1)])
