"""Serving a checkpoint: versions, normalised embeddings, flip test, and ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedder import checkpoint as ckpt
from embedder.config import variant
from embedder.inference import Embedder, preprocess
from embedder.model import build_model


@pytest.fixture(scope="module")
def cqa_checkpoint() -> ckpt.Checkpoint:
    torch.manual_seed(0)
    model = build_model(variant("cqa"))
    # Non-trivial BN statistics, as a trained model has them.
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 112, 112))
    return ckpt.from_model(model.eval(), {"thresholds": {"normal": {"1e-3": 0.4}}})


@pytest.fixture(scope="module")
def real_crops(celeba_aligned_dir: Path) -> np.ndarray:
    paths = sorted(celeba_aligned_dir.glob("0000[1-4]/*.webp"))[:12]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_checkpoint_round_trip_keeps_weights_config_version_and_metadata(
    cqa_checkpoint: ckpt.Checkpoint, tmp_path: Path
) -> None:
    loaded = ckpt.load(ckpt.save(cqa_checkpoint, tmp_path / "m.pt"))
    assert loaded.config == cqa_checkpoint.config
    assert loaded.version == cqa_checkpoint.version
    assert loaded.metadata == {"thresholds": {"normal": {"1e-3": 0.4}}}
    x = torch.randn(2, 3, 112, 112)
    assert torch.equal(loaded.build()(x).embedding, cqa_checkpoint.build()(x).embedding)


def test_half_weights_halve_the_file_and_read_back_as_the_rounded_fp32_model(
    cqa_checkpoint: ckpt.Checkpoint, tmp_path: Path
) -> None:
    full = ckpt.save(cqa_checkpoint, tmp_path / "full.pt")
    half = ckpt.with_half_weights(cqa_checkpoint)
    loaded = ckpt.load(ckpt.save(half, tmp_path / "half.pt"))
    assert loaded.half_weights and loaded.version == half.version != cqa_checkpoint.version
    assert loaded.version == ckpt.model_version(loaded.config, loaded.state_dict)
    assert all(v.dtype != torch.float16 for v in loaded.state_dict.values())
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in half.state_dict.items())
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * full.stat().st_size
    # A file that stored half weights is saved so again (e.g. after `eval calibrate --write`).
    again = ckpt.load(ckpt.save(loaded, tmp_path / "again.pt"))
    assert again.half_weights and again.version == loaded.version


def test_model_version_names_the_weights() -> None:
    torch.manual_seed(1)
    a = ckpt.from_model(build_model(variant("cqa")))
    b = ckpt.from_model(build_model(variant("cqa")))
    assert a.version.startswith("cqaface-mobilefacenet-cqa-")
    assert a.version != b.version
    assert ckpt.from_model(a.build()).version == a.version


def test_a_missing_or_foreign_checkpoint_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match="no model checkpoint"):
        ckpt.load(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        ckpt.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a CQA-Face checkpoint"):
        ckpt.load(tmp_path / "other.pt")


def test_embeddings_are_unit_vectors_with_maps_and_qualities(
    cqa_checkpoint: ckpt.Checkpoint, real_crops: np.ndarray
) -> None:
    out = Embedder.from_checkpoint(cqa_checkpoint, device="cpu").embed(real_crops)
    assert out.vectors.shape == (len(real_crops), 512) and out.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert out.attention.shape == (len(real_crops), 4, 7, 7)
    assert ((out.quality > 0) & (out.quality < 1)).all()


def test_flip_test_is_the_normalised_sum_of_image_and_mirror(
    cqa_checkpoint: ckpt.Checkpoint, real_crops: np.ndarray
) -> None:
    plain = Embedder.from_checkpoint(cqa_checkpoint, device="cpu", flip=False)
    a = plain.embed(real_crops).vectors
    b = plain.embed(real_crops[:, :, ::-1].copy()).vectors
    expected = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    flipped = (
        Embedder.from_checkpoint(cqa_checkpoint, device="cpu", flip=True).embed(real_crops).vectors
    )
    assert np.allclose(flipped, expected, atol=1e-5)


def test_results_do_not_depend_on_the_batch_size(
    cqa_checkpoint: ckpt.Checkpoint, real_crops: np.ndarray
) -> None:
    one = (
        Embedder.from_checkpoint(cqa_checkpoint, device="cpu", batch_size=1)
        .embed(real_crops)
        .vectors
    )
    many = (
        Embedder.from_checkpoint(cqa_checkpoint, device="cpu", batch_size=32)
        .embed(real_crops)
        .vectors
    )
    assert np.allclose(one, many, atol=1e-5)


def test_crops_that_are_not_aligned_faces_are_refused(cqa_checkpoint: ckpt.Checkpoint) -> None:
    embedder = Embedder.from_checkpoint(cqa_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="align faces first"):
        embedder.embed(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="no faces"):
        embedder.embed([])


def test_preprocessing_matches_training_scaling() -> None:
    x = preprocess(np.full((1, 112, 112, 3), 255, np.uint8))
    assert x.shape == (1, 3, 112, 112) and np.allclose(x, 1.0)


def test_onnx_runtime_matches_pytorch_on_real_faces(
    cqa_checkpoint: ckpt.Checkpoint, real_crops: np.ndarray, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from embedder.onnx_export import OnnxEmbedder, export

    path = export(cqa_checkpoint, tmp_path / "m.onnx")
    onnx_embedder = OnnxEmbedder(path)
    assert onnx_embedder.version == cqa_checkpoint.version
    onnx_out = onnx_embedder.embed(real_crops[:5])  # a batch size never seen at export
    torch_out = Embedder.from_checkpoint(cqa_checkpoint, device="cpu").embed(real_crops[:5])
    cosine = (onnx_out.vectors * torch_out.vectors).sum(1)
    assert cosine.min() >= 0.9999
    assert np.allclose(onnx_out.quality, torch_out.quality, atol=1e-4)
