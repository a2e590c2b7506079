"""End to end on real people: enrol 5 ORL photos of each of 40 subjects through the gallery
(detection, alignment, embedding, templates in a real database, FAISS) and identify the other 5.

Floor: Rank-1 >= 0.70 over the 200 probes. It separates a working chain from a broken one:
a broken link (alignment, template maths, id mapping in the index) falls to chance, 1/40 =
0.025, and a model with random weights still scores 0.395 here (measured), while the first
CPU-trained model (cqaface-mobilefacenet-cqa-c5c2866960bc) scores 0.81. For scale, PCA
eigenfaces on raw pixels with nearest-neighbour matching reach 0.86 (20 components) to 0.91
(199) on this very split (measured): on ORL's grey studio photos that model is still below the
pixel baseline, a model-quality finding, not a fault of the gallery. A probe in which no face
is found counts as a miss. Runs with the shipped model (or CQAFACE_MODEL); skipped without one.
"""

from __future__ import annotations

import pytest

from embedder import settings as embedder_settings
from embedder.imageio import load_image
from identify.gallery import migrate
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.store import GalleryStore
from identify.gallery.tables import ItemStatus
from identify.search.encode import FaceEncoder
from identify.search.live_index import LiveIndex

RANK1_FLOOR = 0.70


@pytest.fixture(scope="module")
def embedder():
    path = embedder_settings.model_path()
    if not path.is_file():
        pytest.skip(
            f"no trained model at {path}: the ORL Rank-1 check needs the shipped checkpoint "
            "(embedder/weights/cqaface.pt) or CQAFACE_MODEL"
        )
    from embedder.inference import Embedder

    return Embedder.load(path, device="cpu")


@pytest.mark.slow
def test_orl_rank1_with_five_gallery_photos_per_subject(orl_dir, embedder, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'orl.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    encoder = FaceEncoder(embedder)
    store = GalleryStore.for_encoder(engine, encoder)
    index = LiveIndex(
        engine, model_version=store.model_version, dim=store.dim, index_dir=tmp_path / "index"
    )
    enroller = Enroller(store, encoder, keep="none", masked_templates=False)
    subjects = sorted((p for p in orl_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    statuses = []
    for folder in subjects:
        for k in range(1, 6):
            statuses.append(enroller.enrol(folder.name, folder / f"{k}.pgm").status)
    enrolled = statuses.count(ItemStatus.ENROLLED)
    ids = {name: i for i, name in store.names(index.index().ids()).items()}
    hits, probes = 0, 0
    for folder in subjects:
        for k in range(6, 11):
            probes += 1
            try:
                faces = encoder.faces(load_image(folder / f"{k}.pgm"), "largest")
            except ValueError:  # no face found: a miss
                continue
            vector = encoder.encode(faces, mask="no")[0].vector
            found = index.index().search(vector, 1)[1][0, 0]
            hits += int(found == ids.get(folder.name, -2))
    rank1 = hits / probes
    with capsys.disabled():
        print(
            f"\nORL: {enrolled}/200 gallery photos enrolled, {len(ids)} subjects; "
            f"Rank-1 {rank1:.3f} over {probes} probes (model {embedder.version})"
        )
    engine.dispose()
    assert len(ids) == 40
    assert rank1 >= RANK1_FLOOR
