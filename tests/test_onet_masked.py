"""The masked-face O-Net's training data (`trainer/onet_masked.py`): training identities only,
targets where the reference points are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedder.align import template
from trainer.onet_masked import reference_faces, sample


def test_training_faces_leave_out_every_celeba_photos_identity(
    celeba_aligned_dir: Path, celeba_photos_dir: Path
) -> None:
    """celeba-photos' identities are the validation faces every detector test runs on."""
    faces = reference_faces(celeba_aligned_dir)
    held = {p.name for p in celeba_photos_dir.iterdir() if p.is_dir()}
    trained = {path.parent.name for path, _, _ in faces}
    assert trained and not trained & held
    # Mapped into the aligned crop by alignment's least-squares similarity fit, the reference
    # points keep the template's centroid (the fit maps centroid onto centroid), exactly.
    centroids = np.stack([m.mean(axis=0) for _, m, _ in faces])
    assert np.allclose(centroids, template().mean(axis=0), atol=1e-4)


def test_a_sample_is_an_onet_input_with_points_in_box_units() -> None:
    crop = np.full((112, 112, 3), 128, np.uint8)
    box = np.array([16.0, 20.0, 96.0, 108.0])
    pixels, target = sample(crop, template().astype(np.float64), box, np.random.default_rng(0))
    assert pixels.shape == (48, 48, 3) and target.shape == (11,)
    assert target[10] in (0.0, 1.0)
    assert np.all((target[:10] > 0) & (target[:10] < 1))  # the points lie inside the box
