"""Galleries with planted faults, of real celeba-photos people embedded by the shipped model.

Each photo is detected and embedded once per test session (``embedded``); a gallery is then
those embeddings stored under the names a layout gives them, in milliseconds, so that a
faulty gallery and the one enrolled clean from the start hold exactly the same face vectors.

The layout, of the first 11 people (sorted folder names) P0..P10:
- P0..P9: photos 0-7 each, plus a Gaussian-blurred copy (radius 3) of photo 0;
- FOREIGN: photos 8-12 of P1 filed under P0 (a subject given five photos of another person);
- ALIAS: P2's photos 4-7 under the name "P2 (alias)" (one person enrolled under two names);
- probes: photo 13 of P0..P9 (known people) and photos 0-1 of P10 (not enrolled).
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFilter

from identify.gallery import migrate
from identify.gallery import vectors as vec
from identify.gallery.db import make_engine
from identify.gallery.store import FaceRecord, GalleryStore, PhotoRecord
from identify.gallery.tables import Template, TemplateKind

OWN = range(8)
FOREIGN = range(8, 13)
PROBE = 13
# The model every gallery here is embedded and served with: the planted faults' findings below
# (the false alarms included) are those of its embeddings and calibrated threshold.
MODEL = Path(__file__).resolve().parents[1] / "embedder" / "weights" / "cqaface-y1.pt"
ALIAS_SUFFIX = " (alias)"
BLUR_RADIUS = 3


@dataclass(frozen=True)
class Photo:
    person: str
    path: Path
    blurred: bool
    data: bytes
    vector: np.ndarray
    masked: bool

    @property
    def label(self) -> str:
        return f"{self.person}/{self.path.name}" + (" blurred" if self.blurred else "")


def blurred(data: bytes) -> bytes:
    image = PILImage.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)).save(out, "JPEG", quality=90)
    return out.getvalue()


@functools.cache
def encoder():
    from identify.search.encode import FaceEncoder
    from identify.settings import Settings

    return FaceEncoder.load(MODEL, Settings())


@functools.cache
def embedded(root: Path) -> dict[tuple[str, int, bool], Photo]:
    """(person, photo number, blurred) -> Photo, for every photo the layout uses."""
    from embedder.imageio import load_image

    people = sorted(p.name for p in root.iterdir() if p.is_dir())[:11]
    wanted = [(p, i, False) for p in people[:10] for i in [*OWN, PROBE]]
    wanted += [(p, 0, True) for p in people[:10]]
    wanted += [(people[1], i, False) for i in FOREIGN] + [(people[10], i, False) for i in (0, 1)]
    found = {}
    model = encoder()
    for person, number, blur in wanted:
        path = sorted((root / person).glob("*.jpg"))[number]
        data = blurred(path.read_bytes()) if blur else path.read_bytes()
        [face] = model.encode(model.faces(load_image(data), "largest", gallery=True), "auto")
        found[(person, number, blur)] = Photo(person, path, blur, data, face.vector, face.masked)
    return found


def people(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())[:11]


def layout(
    root: Path, *, foreign: str | None = None, alias: bool = False
) -> list[tuple[str, Photo]]:
    """(subject name, photo) of the gallery: clean, or with the FOREIGN photos filed under
    ``foreign`` (P0 for the fault, P1 where they belong), and/or the ALIAS split."""
    photos, names = embedded(root), people(root)
    rows = []
    for position, person in enumerate(names[:10]):
        for number in OWN:
            name = person + ALIAS_SUFFIX if alias and position == 2 and number >= 4 else person
            rows.append((name, photos[(person, number, False)]))
        rows.append((person, photos[(person, 0, True)]))
    if foreign is not None:
        rows += [(foreign, photos[(names[1], number, False)]) for number in FOREIGN]
    return rows


def probes(root: Path) -> list[Photo]:
    photos, names = embedded(root), people(root)
    return [photos[(p, PROBE, False)] for p in names[:10]] + [
        photos[(names[10], i, False)] for i in (0, 1)
    ]


def build(url: str, rows: list[tuple[str, Photo]]) -> GalleryStore:
    """A migrated gallery at ``url`` holding ``rows`` (subjects created in order of names)."""
    migrate.upgrade(url)
    store = GalleryStore(make_engine(url), model_version=encoder().model_version, dim=512)
    store.add_images(
        [
            PhotoRecord(
                name,
                sha256=hashlib.sha256(photo.data).hexdigest(),
                size_bytes=len(photo.data),
                faces=[
                    FaceRecord(
                        box=(0.0, 0.0, 1.0, 1.0),
                        landmarks=np.zeros((5, 2)),
                        score=1.0,
                        vector=photo.vector,
                        masked=photo.masked,
                    )
                ],
                source=photo.label,
            )
            for name, photo in rows
        ]
    )
    return store


def templates(store: GalleryStore) -> dict[str, np.ndarray]:
    """Subject name -> normal template."""
    from sqlalchemy import select

    from identify.gallery.tables import Subject

    with store.sessions() as session:
        rows = session.execute(
            select(Subject.name, Template.dim, Template.vector)
            .join(Template, Template.subject_id == Subject.id)
            .where(Template.kind == TemplateKind.NORMAL)
        ).all()
    return {name: vec.from_bytes(data, dim) for name, dim, data in rows}
