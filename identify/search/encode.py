"""Photo -> faces -> embeddings, shared by enrolment and search so that both see a face the
same way: detection, alignment, embedding, mask flag and part qualities."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedder.errors import FaceTooSmall
from embedder.faces import Face, Policy, align_faces, choose_faces, decode_for, detect_photo
from embedder.imageio import MAX_BYTES, Photo
from embedder.masks import apply_mask
from embedder.mtcnn import Detection
from embedder.quality import QualityFit, box_size, face_quality
from identify.settings import Settings

MaskMode = Literal["auto", "yes", "no"]
MASK_MODES: tuple[MaskMode, ...] = ("auto", "yes", "no")


@dataclass(frozen=True, eq=False)
class EncodedFace:
    face: Face
    vector: np.ndarray  # (D,) float32 unit
    quality: np.ndarray  # (b,) part qualities
    masked: bool
    mask_probability: float | None  # None: the model has no mask classifier, or the caller said
    attention: np.ndarray | None = None  # (b, h, w) maps in [0, 1] over the aligned crop
    # The face's quality in [0, 1] (embedder.quality): parts, detection, size and sharpness.
    face_quality: float | None = None


class FaceEncoder:
    """An embedder and a detector, applied the same way to gallery photos and probes; faces
    under ``min_face_size`` pixels are refused, gallery faces under ``enrol_min_face_size``."""

    def __init__(
        self,
        embedder: Any,
        *,
        detector: Any | None = None,
        min_face_size: int = Settings.min_face_size,
        enrol_min_face_size: int = Settings.enrol_min_face_size,
    ) -> None:
        self.embedder = embedder
        self.detector = detector
        self.min_face_size = min_face_size
        self.enrol_min_face_size = enrol_min_face_size

    @classmethod
    def load(cls, model: str | Path | None = None, settings: Settings | None = None) -> FaceEncoder:
        """The serving encoder of a checkpoint (default: CQAFACE_MODEL, else the shipped
        model) with the face sizes of ``settings``: the web app, the CLI and the workers all
        build theirs here, on the runtime CQAFACE_RUNTIME chooses."""
        from embedder import runtime

        settings = settings or Settings()
        return cls(
            runtime.load_embedder(model),
            min_face_size=settings.min_face_size,
            enrol_min_face_size=settings.enrol_min_face_size,
        )

    @property
    def model_version(self) -> str:
        return str(self.embedder.version)

    @property
    def quality_fit(self) -> QualityFit | None:
        """The face quality fit of the model's checkpoint (embedder.quality); None for a
        checkpoint never fitted, whose faces then get no quality."""
        return getattr(self.embedder, "quality_fit", None)

    @property
    def detector_name(self) -> str:
        """The detector that finds this encoder's faces (CQAFACE_DETECTOR), which a gallery
        records with each face: a change of detector changes the crops the model sees."""
        return self._detector().name

    def _detector(self) -> Any:
        if self.detector is None:
            from embedder import runtime

            self.detector = runtime.load_detector(self.min_face_size)
        return self.detector

    def read(
        self,
        source: bytes | str | os.PathLike[str],
        policy: Policy,
        *,
        gallery: bool = False,
        max_bytes: int | None = MAX_BYTES,
    ) -> tuple[Photo, list[Face]]:
        """Decode a photo file or its bytes and find its faces as :meth:`faces` does. The
        decode is as small as detection at the working size allows (a 12 MP JPEG is decoded
        at 1/2, 1/4 or 1/8 of its sides), each face aligned from one in which it is at least
        the crop's size: a large photo is never decoded in full only to be shrunk. Returns
        the detection's decode (``Photo.scale`` maps the faces' photo pixels onto it) and the
        faces; sizes are checked before any pixel is decoded."""
        photo = decode_for(self._detector(), source, max_bytes=max_bytes)
        return photo, self._faces(photo, policy, gallery, source, max_bytes)

    def realign(self, source: bytes | str | os.PathLike[str], detection: Detection) -> Face:
        """A stored face aligned anew from its kept photo (re-embedding), from the decode
        :meth:`read` aligned it from when it was found (same working size: the same crop)."""
        photo = decode_for(self._detector(), source, max_bytes=None)  # it was checked then
        return align_faces(photo, [detection], source, max_bytes=None)[0]

    def faces(self, image: np.ndarray, policy: Policy, *, gallery: bool = False) -> list[Face]:
        """Faces of an RGB photo per ``policy``; raises typed FaceInputErrors. A ``gallery``
        photo's faces must reach CQAFACE_ENROL_MIN_FACE_SIZE, a probe's CQAFACE_MIN_FACE_SIZE;
        a refusal for size names the setting."""
        return self._faces(Photo(image, (image.shape[1], image.shape[0])), policy, gallery)

    def _faces(
        self,
        photo: Photo,
        policy: Policy,
        gallery: bool,
        source: bytes | str | os.PathLike[str] | None = None,
        max_bytes: int | None = MAX_BYTES,
    ) -> list[Face]:
        detector = self._detector()
        setting, minimum = "CQAFACE_MIN_FACE_SIZE", self.min_face_size
        detections = None
        if gallery and self.enrol_min_face_size > minimum:
            setting, minimum = "CQAFACE_ENROL_MIN_FACE_SIZE", self.enrol_min_face_size
            detections = detect_photo(detector, photo, min_face_size=minimum)
            if not any(d.size >= minimum for d in detections):
                detections = None  # look for smaller faces too: "too small", not "no face"
        if detections is None:
            detections = detect_photo(detector, photo)
        try:
            chosen = choose_faces(detections, photo.size, policy=policy, min_face_size=minimum)
        except FaceTooSmall as error:
            raise FaceTooSmall(f"{error} ({setting})") from None
        return align_faces(photo, chosen, source, max_bytes=max_bytes)

    def encode(self, faces: list[Face], mask: MaskMode = "auto") -> list[EncodedFace]:
        """Embed ``faces`` and score their quality (embedder.quality); the mask flag comes
        from the model's classifier (``auto``; no classifier means "not masked") or from the
        caller (``yes`` / ``no``)."""
        if mask not in MASK_MODES:
            raise ValueError(f"mask must be one of {MASK_MODES}, got {mask!r}")
        if not faces:
            return []
        result = self.embedder.embed([f.crop for f in faces])
        fit = self.quality_fit
        probability = mask_probability(self.embedder, result) if mask == "auto" else None
        flags = (
            np.full(len(faces), mask == "yes")
            if probability is None
            else probability >= mask_threshold(self.embedder)
        )
        return [
            EncodedFace(
                face=face,
                vector=np.asarray(result.vectors[i], np.float32),
                quality=np.asarray(result.quality[i], np.float32),
                masked=bool(flags[i]),
                mask_probability=None if probability is None else float(probability[i]),
                attention=_attention(result, i),
                face_quality=face_quality(
                    fit,
                    result.quality[i],
                    _agreement(result, i),
                    face.score,
                    box_size(face.box),
                    face.crop,
                ),
            )
            for i, face in enumerate(faces)
        ]

    def masked_copies(self, crops: list[np.ndarray], seeds: list[str]) -> np.ndarray:
        """Embeddings of synthetic-masked copies of ``crops``; each crop's seed (its photo's
        hash) gives it the same mask at enrolment and at re-embedding."""
        masked = [
            apply_mask(crop, rng=int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8])).image
            for crop, seed in zip(crops, seeds, strict=True)
        ]
        return np.asarray(self.embedder.embed(masked).vectors, np.float32)


def _agreement(embeddings: Any, i: int) -> float | None:
    agreement = getattr(embeddings, "agreement", None)
    return None if agreement is None or len(agreement) <= i else float(agreement[i])


def _attention(embeddings: Any, i: int) -> np.ndarray | None:
    maps = getattr(embeddings, "attention", None)
    if maps is None or len(maps) <= i or np.ndim(maps[i]) != 3:
        return None
    return np.asarray(maps[i], np.float32)


def mask_threshold(embedder: Any) -> float:
    """The probability above which the checkpoint's classifier calls a face masked."""
    saved = (getattr(embedder, "metadata", None) or {}).get("mask_classifier") or {}
    return float(saved.get("threshold", 0.5))


def mask_probability(embedder: Any, embeddings: Any) -> np.ndarray | None:
    """P(masked) per face from the checkpoint's mask classifier, or None without one."""
    classify = getattr(embedder, "mask_probability", None)
    if classify is None:
        return None
    probability = classify(embeddings)
    return None if probability is None else np.asarray(probability, np.float64).reshape(-1)
