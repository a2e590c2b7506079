"""The mask-presence classifier: fitted on synthetic masks, stored in the checkpoint, read back
by every embedder, and accurate on people and masks it never saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedder import checkpoint as ckpt
from embedder import settings
from embedder.config import ModelConfig
from embedder.inference import Embedder, Embeddings
from embedder.mask_classifier import MaskClassifier
from embedder.model import build_model
from trainer.config import load_config
from trainer.data import identity_split
from trainer.mask_training import embed_pairs, fit, measure, sample_faces


def test_a_fitted_classifier_separates_what_is_separable() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20))
    y = (x[:, 3] - 0.5 * x[:, 7] > 0).astype(int)
    classifier = fit(x, y)
    assert measure(classifier, x, y)["accuracy"] > 0.97


def test_a_checkpoint_without_a_classifier_says_so() -> None:
    embedder = Embedder(build_model(ModelConfig()).eval(), flip=False)
    out = embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))
    assert embedder.mask_probability(out) is None


def test_the_cli_stores_the_classifier_in_the_checkpoint(
    celeba_aligned_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    ckpt.save(ckpt.from_model(build_model(ModelConfig()).eval()), model)
    config = tmp_path / "split.py"
    config.write_text(
        "from embedder.config import ModelConfig\n"
        "from trainer.config import DataConfig, TrainConfig\n"
        "config = TrainConfig(name='split', model=ModelConfig(),\n"
        f"    data=DataConfig(root={str(celeba_aligned_dir)!r}, validation_identities=40))\n"
    )
    command = [sys.executable, "-m", "identify.cli", "train-mask-classifier", str(config)]
    command += ["--model", str(model), "--train-faces", "30", "--validation-faces", "20"]
    result = subprocess.run([*command, "--write"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)["mask_classifier"]
    assert report["validation"]["faces"] == 40  # 20 faces, bare and masked
    embedder = Embedder.load(model, flip=False)
    probability = embedder.mask_probability(
        Embeddings(np.eye(1, 512, dtype=np.float32), np.zeros((1, 4, 7, 7)), np.full((1, 4), 0.5))
    )
    assert probability.shape == (1,) and 0 <= probability[0] <= 1


def test_the_shipped_model_tells_masked_faces_from_bare_ones(celeba_aligned_dir: Path) -> None:
    if not settings.DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model at embedder/weights/cqaface.pt")
    embedder = Embedder.load(settings.DEFAULT_MODEL)
    split = identity_split(load_config("cpu_y1_stage1").data)
    faces = sample_faces(celeba_aligned_dir, split.validation, 150, seed=5)
    x, y = embed_pairs(embedder, faces, seed=99)  # masks drawn unlike the fitting's
    bare, masked = x[y == 0], x[y == 1]
    classifier = MaskClassifier.from_metadata(embedder.metadata)
    assert (classifier.probability(bare) < 0.5).mean() >= 0.85
    assert (classifier.probability(masked) >= 0.5).mean() >= 0.85
