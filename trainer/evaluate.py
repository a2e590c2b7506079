"""The paper's evaluation protocols over an embedder.

- Verification over pairs (LFW style): 10-fold accuracy, TAR@FAR, AUC; with synthetic masks
  on one image of each pair (masked LFW) or on both (M2M).
- Identification: per-subject templates from gallery photos (normalised mean of normalised
  embeddings), probes searched against all of them: Rank-1/Rank-5, CMC, and TAR@FAR of every
  probe against every template (M2N when the probes are masked).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from embedder.inference import EmbedderBase, l2_normalise
from trainer.crops import FaceChoice, load_crops, masked
from trainer.metrics import cmc, kfold_accuracy, roc_auc, roc_curve, tar_at_far
from trainer.pairs import Pair
from trainer.plots import cmc_png, roc_png

MaskMode = Literal["none", "one", "both"]
FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def _embed(embedder: EmbedderBase, crops: Sequence[np.ndarray]) -> np.ndarray:
    return embedder.embed(np.stack(crops)).vectors


def verify_pairs(
    embedder: EmbedderBase,
    pairs: Sequence[Pair],
    mask: MaskMode = "none",
    seed: int = 0,
    plot: Path | None = None,
    face: FaceChoice = "largest",
) -> dict:
    """Verification metrics over `pairs`. Pairs whose photos give no face are scored -1 (a
    rejection), as a deployed system would treat them, and counted in `unusable_pairs`.
    `face` picks the face of a raw photo with several (LFW's protocol: "centre")."""
    needed: dict[tuple[Path, bool], None] = {}
    for pair in pairs:
        needed[(pair.path1, mask == "both")] = None
        needed[(pair.path2, mask != "none")] = None
    crops, failures = load_crops(dict.fromkeys(path for path, _ in needed), face)
    keys = [k for k in needed if k[0] in crops]
    batch = [masked(crops[p], str(p), seed) if m else crops[p] for p, m in keys]
    vectors = dict(zip(keys, _embed(embedder, batch), strict=True)) if keys else {}
    scores = np.array(
        [
            float(vectors[(p.path1, mask == "both")] @ vectors[(p.path2, mask != "none")])
            if p.path1 in crops and p.path2 in crops
            else -1.0
            for p in pairs
        ]
    )
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    if len(np.unique(folds)) < 2:
        folds = None
    if plot:
        roc_png(*roc_curve(scores, same), plot, f"verification, masks: {mask}")
    return {
        **kfold_accuracy(scores, same, folds),
        "tar_at_far": tar_at_far(scores, same, FARS),
        "auc": roc_auc(scores, same),
        "pairs": len(pairs),
        "genuine": int(same.sum()),
        "unusable_pairs": sum(p.path1 in failures or p.path2 in failures for p in pairs),
        "mask": mask,
    }


def templates(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject templates: the normalised mean of each subject's normalised embeddings."""
    subjects = np.unique(labels)
    means = np.stack([vectors[labels == s].mean(0) for s in subjects])
    return l2_normalise(means), subjects


def identify(
    embedder: EmbedderBase,
    gallery: Sequence[tuple[Path, str]],
    probes: Sequence[tuple[Path, str]],
    *,
    mask_gallery: bool = False,
    mask_probes: bool = False,
    seed: int = 0,
    plot: Path | None = None,
    face: FaceChoice = "largest",
) -> dict:
    """Closed-set Rank-k and open-set-style TAR@FAR of probes against gallery templates."""
    g_vec, g_lab, g_fail = _embed_labelled(embedder, gallery, mask_gallery, seed, face)
    p_vec, p_lab, p_fail = _embed_labelled(embedder, probes, mask_probes, seed, face)
    known = np.isin(p_lab, g_lab)
    if not known.any():
        raise ValueError("no probe's subject is in the gallery")
    t_vec, t_lab = templates(g_vec, g_lab)
    similarity = p_vec[known] @ t_vec.T
    curve = cmc(similarity, p_lab[known], t_lab, max_rank=min(10, len(t_lab)))
    same = p_lab[known][:, None] == t_lab[None, :]
    if plot:
        cmc_png(curve, plot, f"identification (masked probes: {mask_probes})")
    return {
        "rank1": float(curve[0]),
        "rank5": float(curve[min(4, len(curve) - 1)]),
        "cmc": [round(float(v), 5) for v in curve],
        "tar_at_far": tar_at_far(similarity.ravel(), same.ravel(), FARS),
        "subjects": len(t_lab),
        "probes": int(known.sum()),
        "unusable": {"gallery": g_fail, "probes": p_fail},
        "mask_gallery": mask_gallery,
        "mask_probes": mask_probes,
    }


def _embed_labelled(
    embedder: EmbedderBase,
    items: Sequence[tuple[Path, str]],
    mask: bool,
    seed: int,
    face: FaceChoice,
) -> tuple[np.ndarray, np.ndarray, int]:
    crops, failures = load_crops((path for path, _ in items), face)
    usable = [(path, label) for path, label in items if path in crops]
    batch = [masked(crops[p], str(p), seed) if mask else crops[p] for p, _ in usable]
    return _embed(embedder, batch), np.array([label for _, label in usable]), len(failures)
