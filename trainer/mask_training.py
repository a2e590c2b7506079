"""Fits the mask-presence classifier of a trained embedder on synthetic masks, and measures it
on other people with other masks.

Faces come from a training config's split: the classifier learns on training identities and
is scored on validation identities, each face once bare and once under a synthetic mask drawn
with a different seed for each side, so neither the people nor the mask draws repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from embedder.inference import EmbedderBase
from embedder.mask_classifier import MaskClassifier, features
from trainer.crops import load_crops, masked

TRAIN_SEED, VALIDATION_SEED = 11, 12


def sample_faces(root: Path, identities: Sequence[str], count: int, seed: int = 0) -> list[Path]:
    """Up to `count` crops, one per identity first, drawn deterministically."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name in rng.permutation(sorted(identities)):
        files = sorted((root / name).iterdir())
        if files:
            chosen.append(files[rng.integers(len(files))])
        if len(chosen) == count:
            break
    return chosen


def embed_pairs(
    embedder: EmbedderBase, paths: Sequence[Path], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features of each face bare and masked, and the labels (0 bare, 1 masked)."""
    crops, _ = load_crops(paths)
    bare = [crops[p] for p in paths if p in crops]
    covered = [masked(crops[p], str(p), seed) for p in paths if p in crops]
    out = embedder.embed(np.stack(bare + covered))
    labels = np.repeat([0, 1], len(bare))
    return features(out), labels


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> MaskClassifier:
    """L2-regularised logistic regression (L-BFGS, float64): a convex fit, no tuning."""
    inputs = torch.from_numpy(x)
    targets = torch.from_numpy(y.astype(np.float64))
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = inputs @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss = loss + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return MaskClassifier(weight.detach().numpy().copy(), float(bias.detach()))


def measure(classifier: MaskClassifier, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    predicted = classifier.is_masked(x)
    truth = y.astype(bool)
    return {
        "accuracy": round(float((predicted == truth).mean()), 4),
        "missed_masks": round(float((~predicted[truth]).mean()), 4),
        "false_masks": round(float(predicted[~truth].mean()), 4),
        "faces": len(y),
    }


def train_mask_classifier(
    embedder: EmbedderBase,
    root: Path,
    train_identities: Sequence[str],
    validation_identities: Sequence[str],
    train_faces: int = 3000,
    validation_faces: int = 1000,
) -> tuple[MaskClassifier, dict[str, dict[str, float]]]:
    x, y = embed_pairs(embedder, sample_faces(root, train_identities, train_faces), TRAIN_SEED)
    classifier = fit(x, y)
    vx, vy = embed_pairs(
        embedder, sample_faces(root, validation_identities, validation_faces), VALIDATION_SEED
    )
    return classifier, {
        "train": measure(classifier, x, y),
        "validation": measure(classifier, vx, vy),
    }
