"""Decision thresholds for a target false accept rate, from impostor scores of held-out people.

The system's open-set answer ("unknown" below the threshold) needs the score that strangers
exceed with probability FAR. Scores are all cross-identity pairs of the calibration faces
(subsampled past `max_pairs`): for normal probes, normal vs normal; for masked probes, a
synthetic-masked face vs the normal faces of everyone else (the M2N setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedder.inference import EmbedderBase
from trainer.crops import load_crops, masked
from trainer.metrics import threshold_at_far

FARS = (1e-2, 1e-3)


def impostor_scores(
    probes: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    max_pairs: int = 4_000_000,
    seed: int = 0,
) -> np.ndarray:
    scores = probes @ gallery.T
    different = probe_labels[:, None] != gallery_labels[None, :]
    values = scores[different]
    if len(values) > max_pairs:
        values = np.random.default_rng(seed).choice(values, max_pairs, replace=False)
    return values


def calibrate(
    embedder: EmbedderBase,
    items: Sequence[tuple[Path, str]],
    fars: Sequence[float] = FARS,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{"normal": {far: threshold}, "masked": {far: threshold}, "impostor_pairs": n}."""
    crops, _ = load_crops(path for path, _ in items)
    usable = [(p, label) for p, label in items if p in crops]
    labels = np.array([label for _, label in usable])
    normal = embedder.embed(np.stack([crops[p] for p, _ in usable])).vectors
    masked_vectors = embedder.embed(
        np.stack([masked(crops[p], str(p), seed) for p, _ in usable])
    ).vectors
    result: dict[str, dict[str, float]] = {}
    for name, probes in (("normal", normal), ("masked", masked_vectors)):
        scores = impostor_scores(probes, labels, normal, labels, seed=seed)
        result[name] = {f"{far:g}": round(threshold_at_far(scores, far), 5) for far in fars}
        result[name]["impostor_pairs"] = len(scores)
    return result
