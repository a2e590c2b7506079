"""A probe's mask flag comes from the checkpoint's mask classifier, or from the caller; a model
without a classifier treats faces as unmasked unless told."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedder.config import ModelConfig
from embedder.imageio import load_image
from embedder.inference import Embedder
from embedder.mask_classifier import METADATA_KEY, MaskClassifier
from embedder.model import build_model
from identify.search.encode import FaceEncoder


def encoder_with(bias: float | None, threshold: float = 0.5) -> FaceEncoder:
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    metadata = {}
    if bias is not None:
        features = model.config.embedding_size + model.config.branches
        classifier = MaskClassifier(np.zeros(features), bias, threshold)
        metadata[METADATA_KEY] = classifier.to_metadata()
    return FaceEncoder(Embedder(model, version="random-0", metadata=metadata, device="cpu"))


@pytest.fixture(scope="module")
def faces(orl_dir):
    return encoder_with(None).faces(load_image(orl_dir / "s1" / "1.pgm"), "all")


@pytest.mark.parametrize(("bias", "masked"), [(8.0, True), (-8.0, False)])
def test_the_checkpoint_classifier_sets_the_mask_flag(faces, bias, masked):
    [face] = encoder_with(bias).encode(faces, "auto")
    assert face.masked is masked
    assert face.mask_probability == pytest.approx(1 / (1 + np.exp(-bias)))


@pytest.mark.parametrize(("threshold", "masked"), [(0.9, False), (0.6, True)])
def test_the_classifier_decides_at_its_own_threshold(faces, threshold, masked):
    [face] = encoder_with(float(np.log(3.0)), threshold).encode(faces, "auto")  # P = 0.75
    assert face.mask_probability == pytest.approx(0.75)
    assert face.masked is masked


def test_the_caller_overrides_the_classifier(faces):
    encoder = encoder_with(8.0)
    assert encoder.encode(faces, "no")[0].masked is False
    assert encoder.encode(faces, "yes")[0].masked is True
    assert encoder.encode(faces, "no")[0].mask_probability is None


def test_without_a_classifier_faces_are_unmasked_unless_told(faces):
    encoder = encoder_with(None)
    [face] = encoder.encode(faces, "auto")
    assert face.masked is False and face.mask_probability is None
    assert encoder.encode(faces, "yes")[0].masked is True
    with pytest.raises(ValueError, match="mask"):
        encoder.encode(faces, "maybe")
