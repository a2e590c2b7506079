"""Re-embedding for a new model: from the kept crops or the kept photos, every face gets an
embedding by the new model and templates are built for it, while the old model's index keeps
serving; a process of the new model then opens its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fits import Y1_FIT
from sqlalchemy import func, select
from synthetic import Live, live

from embedder.config import ModelConfig
from embedder.imageio import load_image
from embedder.inference import Embedder
from embedder.model import build_model
from embedder.quality import METADATA_KEY
from identify.gallery import migrate
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.reembed import reembed
from identify.gallery.tables import Embedding, ItemStatus, TemplateKind
from identify.search.encode import FaceEncoder


def random_encoder(seed: int) -> FaceEncoder:
    """A random model with y1's quality fit, so that its faces get a quality."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig()).eval()
    metadata = {METADATA_KEY: Y1_FIT.to_metadata()}
    return FaceEncoder(Embedder(model, version=f"random-{seed}", metadata=metadata, device="cpu"))


@pytest.fixture(scope="module")
def encoders() -> tuple[FaceEncoder, FaceEncoder]:
    return random_encoder(0), random_encoder(1)


def served(engine, encoder: FaceEncoder, tmp_path) -> Live:
    """The store and live index of ``encoder``'s model."""
    dim = int(encoder.embedder.config.embedding_size)
    return live(engine, tmp_path / "index", model=encoder.model_version, dim=dim)


def enrolled(tmp_path, encoder, orl_dir, keep: str) -> Live:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    migrate.upgrade(url)
    gallery = served(make_engine(url), encoder, tmp_path)
    enroller = Enroller(gallery.store, encoder, keep=keep)
    for person in ("s1", "s2"):
        result = enroller.enrol(person, orl_dir / person / "1.pgm")
        assert result.status == ItemStatus.ENROLLED
    return gallery


@pytest.mark.parametrize("keep", ["crops", "images"])
def test_reembed_gives_every_face_an_embedding_by_the_new_model(keep, tmp_path, encoders, orl_dir):
    old, new = encoders
    gallery = enrolled(tmp_path, old, orl_dir, keep)
    before = gallery.index.index().ids().tolist()
    report = reembed(gallery.store.engine, new)
    assert report.embedded == 2 and not report.skipped and report.subjects == 2
    with gallery.store.sessions() as session:
        versions = dict(
            session.execute(
                select(Embedding.model_version, func.count())
                .where(Embedding.kind == TemplateKind.NORMAL)
                .group_by(Embedding.model_version)
            ).all()
        )
    assert versions == {"random-0": 2, "random-1": 2}
    # The old model's index is untouched; a process serving the new model finds its own.
    assert gallery.index.index().ids().tolist() == before
    renewed = served(gallery.store.engine, new, tmp_path)
    assert renewed.index.index().ids().tolist() == before
    photo = load_image(orl_dir / "s2" / "1.pgm")
    probe = new.encode(new.faces(photo, "largest"), "no")[0]
    top = renewed.index.index().search(probe.vector, 1)[1][0, 0]
    assert renewed.store.names([top]) == {top: "s2"}  # the same photo: its template is nearest
    assert reembed(gallery.store.engine, new).embedded == 0


def test_faces_kept_without_crop_or_photo_are_reported_skipped(tmp_path, encoders, orl_dir):
    old, new = encoders
    gallery = enrolled(tmp_path, old, orl_dir, "none")
    report = reembed(gallery.store.engine, new)
    assert report.embedded == 0 and len(report.skipped) == 2


def test_a_kept_crop_reads_back_as_the_very_rgb_pixels_that_were_embedded() -> None:
    from identify.gallery.enroller import png_bytes
    from identify.gallery.reembed import _crop
    from identify.gallery.tables import Face

    crop = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    crop[..., 0] = 255  # a red face: a swap of the channels would turn it blue
    read = _crop(None, Face(crop_png=png_bytes(crop)), None)  # type: ignore[arg-type]
    assert read.dtype == np.uint8 and np.array_equal(read, crop)


def test_reembed_scores_faces_stored_before_faces_had_a_quality(tmp_path, encoders, orl_dir):
    from sqlalchemy import update

    from identify.gallery.tables import Face

    old, new = encoders
    gallery = enrolled(tmp_path, old, orl_dir, "crops")
    with gallery.store.sessions() as session, session.begin():
        kept = dict(session.execute(select(Face.id, Face.quality)).all())
        session.execute(update(Face).where(Face.id == min(kept)).values(quality=None))
    reembed(gallery.store.engine, new)
    with gallery.store.sessions() as session:
        after = dict(session.execute(select(Face.id, Face.quality)).all())
    assert 0 <= after[min(kept)] <= 1  # scored now
    assert after[max(kept)] == kept[max(kept)]  # a face with a quality keeps it
