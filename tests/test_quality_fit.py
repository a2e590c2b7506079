"""The face quality fit travels with its checkpoint: stored in the metadata, read at serving
time, written by `python -m trainer.quality_fit`; a checkpoint without one scores no face and
its faces pass the enrolment gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fits import Y1_FIT
from sqlalchemy import select

from embedder import checkpoint as ckpt
from embedder import quality
from embedder.config import ModelConfig
from embedder.imageio import load_image
from embedder.inference import Embedder
from embedder.model import build_model
from embedder.quality import METADATA_KEY, QualityFit
from identify.gallery import migrate
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.store import GalleryStore
from identify.gallery.tables import Face, ItemStatus
from identify.search.encode import FaceEncoder
from identify.settings import Settings
from trainer import quality_fit

# The constants embedder/quality.py held before the fit moved into the checkpoint (y1's).
OLD_MEAN = np.array([0.366133, 0.975833, 9.394355, 6.024088, 4.363304])
OLD_STD = np.array([0.096823, 0.012135, 2.485592, 0.814775, 1.728843])
OLD_COEF = np.array([-1.268222, 0.259255, 0.010665, 0.357677, 0.761855])
OLD_INTERCEPT = 2.555929


@pytest.fixture(scope="module")
def unfitted() -> ckpt.Checkpoint:
    """A checkpoint never fitted, as a user's own `cqaface train` writes one."""
    torch.manual_seed(0)
    return ckpt.from_model(build_model(ModelConfig()).eval())


def test_a_fit_round_trips_through_a_checkpoints_metadata(unfitted, tmp_path: Path) -> None:
    unfitted = ckpt.Checkpoint(unfitted.config, unfitted.state_dict, unfitted.version, {})
    unfitted.metadata[METADATA_KEY] = Y1_FIT.to_metadata(people=150)
    loaded = ckpt.load(ckpt.save(unfitted, tmp_path / "m.pt"))
    assert QualityFit.from_metadata(loaded.metadata) == Y1_FIT
    assert loaded.metadata[METADATA_KEY]["people"] == 150
    assert Embedder.from_checkpoint(loaded, device="cpu").quality_fit == Y1_FIT


def test_a_fit_over_other_features_or_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot score"):
        QualityFit.from_dict({**Y1_FIT.to_metadata(), "features": ["size"]})
    with pytest.raises(ValueError, match="coef has 4 values"):
        QualityFit.from_dict({**Y1_FIT.to_metadata(), "coef": [1, 2, 3, 4]})


def test_scores_under_y1s_fit_equal_those_of_the_old_constants() -> None:
    rng = np.random.default_rng(0)
    x = OLD_MEAN + OLD_STD * rng.normal(size=(50, 5))
    old = 1.0 / (1.0 + np.exp(-(((x - OLD_MEAN) / OLD_STD) @ OLD_COEF + OLD_INTERCEPT)))
    assert np.array_equal(quality.score_features(x, Y1_FIT), old)
    # No flip test: the old code put the mean in for the agreement; NaN now scores the same.
    without_flip = quality.features([0.4, 0.3], None, 0.99, 80.0, 50.0)
    with_mean = without_flip.copy()
    with_mean[1] = OLD_MEAN[1]
    assert np.isnan(without_flip[1])
    assert np.array_equal(
        quality.score_features(without_flip[None], Y1_FIT),
        quality.score_features(with_mean[None], Y1_FIT),
    )


def test_extreme_features_score_within_zero_and_one() -> None:
    extremes = np.array([[0, -1, -20, 0, 0], [1, 1, 20, 10, 20]], float)
    scores = quality.score_features(extremes, Y1_FIT)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_a_checkpoint_without_a_fit_gives_no_quality_and_its_faces_pass_the_gate(
    unfitted, orl_dir: Path, tmp_path: Path
) -> None:
    encoder = FaceEncoder(Embedder.from_checkpoint(unfitted, device="cpu"))
    assert encoder.quality_fit is None
    photo = (orl_dir / "s1" / "1.pgm").read_bytes()
    [encoded] = encoder.encode(encoder.faces(load_image(photo), "largest", gallery=True), "no")
    assert encoded.face_quality is None
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    migrate.upgrade(url)
    settings = Settings.from_env({"CQAFACE_DATA_DIR": str(tmp_path / "data")})
    store = GalleryStore.for_encoder(make_engine(url), encoder)
    enroller = Enroller(store, encoder, settings=settings, keep="none", masked_templates=False)
    assert enroller.enrol("ada", photo, min_quality=1.0).status == ItemStatus.ENROLLED
    with store.sessions() as session:
        assert session.scalars(select(Face.quality)).all() == [None]
    store.engine.dispose()


def test_the_same_faces_score_under_a_fit_and_not_without(unfitted, orl_dir: Path) -> None:
    fitted = ckpt.Checkpoint(
        unfitted.config, unfitted.state_dict, unfitted.version, {METADATA_KEY: Y1_FIT.to_metadata()}
    )
    encoder = FaceEncoder(Embedder.from_checkpoint(fitted, device="cpu"))
    photo = load_image(orl_dir / "s1" / "1.pgm")
    [face] = encoder.faces(photo, "largest")
    [encoded] = encoder.encode([face], "no")
    result = encoder.embedder.embed([face.crop])
    x = quality.features(
        result.quality[0],
        result.agreement[0],
        face.score,
        quality.box_size(face.box),
        quality.sharpness(face.crop),
    )
    assert encoded.face_quality == round(float(quality.score_features(x[None], Y1_FIT)[0]), 4)


def test_write_fit_stores_a_given_fit_in_the_given_checkpoint(unfitted, tmp_path: Path) -> None:
    path = ckpt.save(unfitted, tmp_path / "y1.pt")
    given = json.dumps(Y1_FIT.to_metadata(source="embedder/quality.py before 0.9"))
    quality_fit.main(["--model", str(path), "--write-fit", given])
    saved = ckpt.load(path)
    assert QualityFit.from_metadata(saved.metadata) == Y1_FIT
    assert saved.metadata[METADATA_KEY]["source"] == "embedder/quality.py before 0.9"
    assert saved.version == unfitted.version  # the weights are untouched


class _FakeEmbedder:
    def __init__(self, version: str) -> None:
        self.version = version
        self.metadata = {"thresholds": {"normal": {"0.001": 0.3}}}


def _faces(seed: int) -> quality_fit.FaceSet:
    """Four people, three faces each: vectors near their person's, features at random."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 8))
    identity = np.repeat(np.array(["a", "b", "c", "d"]), 3)
    vectors = centres[np.repeat(np.arange(4), 3)] + rng.normal(size=(12, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    features = Y1_FIT.mean + np.array(Y1_FIT.std) * rng.normal(size=(12, 5))
    return quality_fit.FaceSet(identity, vectors.astype(np.float32), features, np.arange(12))


def test_write_fits_the_given_model_and_caches_its_faces_per_model_version(
    unfitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedder import runtime

    path = ckpt.save(unfitted, tmp_path / "mine.pt")
    loaded: list[Path] = []
    built: list[str] = []
    monkeypatch.setattr(quality_fit, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(quality_fit, "validation_people", lambda: (["a"], [], []))
    monkeypatch.setattr(
        quality_fit,
        "crop_faces",
        lambda people, embedder, degraded: built.append(embedder.version) or _faces(len(built)),
    )
    for version in ("model-one", "model-two", "model-one"):
        monkeypatch.setattr(
            runtime,
            "load_embedder",
            lambda p, version=version: loaded.append(Path(p)) or _FakeEmbedder(version),
        )
        quality_fit.main(["--model", str(path), "--write"])
    assert loaded == [path] * 3
    assert built == ["model-one", "model-two"]  # the third run reads model-one's own cache
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "fit-crops-model-one.npz",
        "fit-crops-model-two.npz",
    ]
    expected = quality_fit.fit(_faces(1), 0.3)
    saved = ckpt.load(path).metadata[METADATA_KEY]
    assert saved == expected
    assert QualityFit.from_metadata(ckpt.load(path).metadata) == QualityFit.from_dict(expected)


def test_onnx_serves_metadata_written_after_its_graph_was_cached(
    unfitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from embedder.onnx_export import OnnxEmbedder

    monkeypatch.setenv("CQAFACE_ONNX_CACHE", str(tmp_path / "onnx"))
    path = ckpt.save(unfitted, tmp_path / "m.pt")
    assert OnnxEmbedder.from_checkpoint(ckpt.load(path)).quality_fit is None
    quality_fit.main(["--model", str(path), "--write-fit", json.dumps(Y1_FIT.to_metadata())])
    assert OnnxEmbedder.from_checkpoint(ckpt.load(path)).quality_fit == Y1_FIT
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # the same graph, not re-exported
