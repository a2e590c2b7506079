"""What the parts do: the mechanism behind CQA's claim, measured before any table.

On the same faces bare and with a synthetic mask: each branch's QAN quality, the share of its
attention that the mask hides, and how much the b maps overlap. A CQA head earns its place on
masked faces only if the branches look at different places (low overlap) and the branches that
look at the mouth and nose score clearly lower when a mask hides them.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedder.inference import preprocess
from embedder.model import CQAFace
from trainer.crops import masked_face
from trainer.occlusion import cell_cover, visible_share


def soft_overlap(maps: torch.Tensor) -> torch.Tensor:
    """(N,b,h,w) -> (N, P): soft IoU, sum min / sum max, of each of the b(b-1)/2 map pairs."""
    m = maps.flatten(2)
    pairs = combinations(range(m.shape[1]), 2)
    lo, hi = torch.minimum, torch.maximum
    return torch.stack(
        [lo(m[:, i], m[:, j]).sum(-1) / hi(m[:, i], m[:, j]).sum(-1) for i, j in pairs], 1
    )


@torch.inference_mode()
def attention_report(model: CQAFace, crops: np.ndarray, keys: list[str]) -> dict[str, Any]:
    """Per-branch quality and hidden share, bare and masked, and the maps' mean pairwise
    overlap, over `crops` (N,112,112,3) masked deterministically by `keys`."""
    if model.config.head != "cqa":
        raise ValueError("the attention report needs a CQA head (this model's is global)")
    faces = [masked_face(c, k) for c, k in zip(crops, keys, strict=True)]
    covered = np.stack([f.image for f in faces])
    model.eval()
    bare = model(torch.from_numpy(preprocess(crops)))
    hidden = model(torch.from_numpy(preprocess(covered)))
    size = hidden.attention.shape[-1]
    cover = torch.from_numpy(np.stack([cell_cover(f.coverage, size) for f in faces]))
    hidden_share = 1 - visible_share(hidden.attention, cover)
    drop = bare.quality - hidden.quality

    def rounded(t: torch.Tensor) -> list[float]:
        return [round(v, 4) for v in t.tolist()]

    return {
        "faces": len(crops),
        "branches": model.config.branches,
        "quality_bare": rounded(bare.quality.mean(0)),
        "quality_masked": rounded(hidden.quality.mean(0)),
        "quality_drop": rounded(drop.mean(0)),
        "quality_drop_std": rounded(drop.std(0)),
        "attention_hidden_share": rounded(hidden_share.mean(0)),
        "overlap_bare": round(soft_overlap(bare.attention).mean().item(), 4),
        "overlap_masked": round(soft_overlap(hidden.attention).mean().item(), 4),
        "spatial_std_bare": rounded(bare.attention.flatten(2).std(-1).mean(0)),
    }


@torch.inference_mode()
def attention_png(model: CQAFace, crops: np.ndarray, keys: list[str], path: Path) -> Path:
    """Each face bare and masked (rows), its b maps over it (columns), the quality above each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    covered = np.stack([masked_face(c, k).image for c, k in zip(crops, keys, strict=True)])
    images = np.stack([x for pair in zip(crops, covered, strict=True) for x in pair])
    out = model.eval()(torch.from_numpy(preprocess(images)))
    b = out.attention.shape[1]
    figure, axes = plt.subplots(len(images), b + 1, figsize=(1.4 * (b + 1), 1.5 * len(images)))
    for row, image in enumerate(images):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title("masked" if row % 2 else "bare", fontsize=7)
        for i in range(b):
            heat = torch.nn.functional.interpolate(
                out.attention[row : row + 1, i : i + 1], size=112, mode="bilinear"
            )[0, 0].numpy()
            axes[row, i + 1].imshow(image)
            axes[row, i + 1].imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[row, i + 1].set_title(f"part {i + 1}: q {out.quality[row, i]:.2f}", fontsize=7)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
