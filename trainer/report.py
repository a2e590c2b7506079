"""One model's numbers on the validation identities of a config's split: what the model card
and the ablation table quote, measured the same way for every model.

- Verification over the split's LFW-style validation pairs (all pairs, no cap): 10-fold
  accuracy, TAR@FAR, and the same with a synthetic mask on one face of each pair.
- Identification over the validation identities: the first `gallery_size` crops of each person
  make the template, the others are probes; Rank-1 bare (normal) and masked (M2N).
- The same through detection and alignment on the `holdout` folder's raw photos (celeba-photos:
  every one of its people is a validation identity), as the product sees faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedder.inference import EmbedderBase
from trainer.config import DataConfig
from trainer.data import identity_split
from trainer.evaluate import identify, verify_pairs
from trainer.pairs import list_identities, list_images, listing_resolver, read_lfw_pairs
from trainer.split import PAIRS_FILE, write_split


def validation_report(
    embedder: EmbedderBase, config: DataConfig, work_dir: Path, gallery_size: int = 2
) -> dict[str, Any]:
    root = Path(config.root)
    validation = identity_split(config).validation
    # Forcing the split's own validation identities reproduces it: same people, same pairs.
    write_split(
        root, work_dir, holdout=validation, n_validation=len(validation), seed=config.split_seed
    )
    pairs = read_lfw_pairs(work_dir / PAIRS_FILE, listing_resolver(root))
    normal = verify_pairs(embedder, pairs, "none")
    masked = verify_pairs(embedder, pairs, "one")
    plain, m2n = _identification(embedder, root, validation, gallery_size)
    report = {
        "model_version": embedder.version,
        "verification": _short(normal),
        "masked_verification": _short(masked),
        "identification": {k: plain[k] for k in ("rank1", "rank5", "subjects", "probes")},
        "m2n": {k: m2n[k] for k in ("rank1", "rank5", "tar_at_far")},
    }
    if config.holdout:
        photos = Path(config.holdout)
        plain, m2n = _identification(embedder, photos, list_identities(photos), PHOTO_GALLERY)
        keys = ("rank1", "rank5", "tar_at_far", "subjects", "probes", "unusable")
        report["photos"] = {k: plain[k] for k in keys}
        report["photos_m2n"] = {k: m2n[k] for k in keys}
    return report


PHOTO_GALLERY = 5  # the model card's celeba-photos protocol: 5 photos make a template


def _identification(
    embedder: EmbedderBase, root: Path, people: list[str], gallery_size: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bare and masked (M2N) probes against templates of each person's first photos."""
    gallery, probes = [], []
    for name in people:
        files = list_images(root / name)
        if len(files) > gallery_size:
            gallery += [(p, name) for p in files[:gallery_size]]
            probes += [(p, name) for p in files[gallery_size:]]
    masked = identify(embedder, gallery, probes, mask_probes=True)
    return identify(embedder, gallery, probes), masked


def _short(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "accuracy_std", "tar_at_far", "auc", "pairs")
    return {k: result[k] for k in keys}
