"""Search: identify (1:N) and verify (1:1), with an open-set decision.

A probe face's top-k subjects come from the normal-template index; the Rank-1 subject is the
answer only when its score reaches the threshold for the target FAR (or the caller's), else the
answer is "unknown". Masked probes are judged against their own (masked) threshold and, by the
fusion policy (CQAFACE_MASK_FUSION), also scored against the subjects' masked templates.

:meth:`Searcher.search` is the one call that the JSON API, the admin UI and the CLI make, and
:meth:`Decision.of` the one place that decides; they only render its answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embedder.imageio import Photo
from identify.gallery.store import GalleryStore
from identify.gallery.tables import TemplateKind
from identify.search.encode import EncodedFace, FaceEncoder, MaskMode
from identify.search.live_index import LiveIndex
from identify.search.thresholds import threshold as calibrated
from identify.settings import MASK_FUSIONS, MaskFusion, Settings

Ranked = list[tuple[int, float]]  # (subject id, score), best first

# Masked probes under a fusion policy: candidates from both indexes, this many per k.
_CANDIDATES_PER_K = 4
_MIN_CANDIDATES = 50


@dataclass(frozen=True)
class Match:
    subject_id: int
    name: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "name": self.name, "score": round(self.score, 5)}


@dataclass(frozen=True)
class Decision:
    """The open-set answer: a subject when its score reaches the threshold, else unknown."""

    match: Match | None
    threshold: float

    @classmethod
    def of(cls, matches: list[Match], threshold: float) -> Decision:
        """The Rank-1 match when its score reaches ``threshold``, else unknown: the only place
        where a probe becomes a subject."""
        best = matches[0] if matches and matches[0].score >= threshold else None
        return cls(best, threshold)

    def to_json(self) -> dict[str, Any] | str:
        if self.match is None:
            return "unknown"
        return {**self.match.to_json(), "threshold": round(self.threshold, 5)}


@dataclass(frozen=True)
class FaceAnswer:
    """Everything the CLI and the JSON API say about one probe face."""

    box: tuple[float, float, float, float] | None
    masked: bool
    mask_probability: float | None
    quality: list[float]
    matches: list[Match]
    decision: Decision
    face_quality: float | None = None  # embedder.quality: never a reason to refuse a probe

    def to_json(self, path: str | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {} if path is None else {"path": path}
        record.update(
            box=None if self.box is None else [round(float(v), 2) for v in self.box],
            masked=self.masked,
            mask_probability=(
                None if self.mask_probability is None else round(self.mask_probability, 4)
            ),
            quality=[round(q, 4) for q in self.quality],
            face_quality=self.face_quality,
            matches=[m.to_json() for m in self.matches],
            decision=self.decision.to_json(),
        )
        return record

    def to_api_json(self) -> dict[str, Any]:
        """:meth:`to_json` in the JSON API's words (openapi.json): ``part_qualities`` for
        ``quality``, and the threshold the decision was made at."""
        record = self.to_json()
        record["part_qualities"] = record.pop("quality")
        record["threshold"] = round(self.decision.threshold, 5)
        return record


@dataclass(frozen=True)
class Probe:
    """A searched probe photo: its decode (possibly reduced: ``photo.scale`` maps the faces'
    photo pixels onto it), its encoded faces, one answer per face."""

    photo: Photo
    faces: list[EncodedFace]
    answers: list[FaceAnswer]


@dataclass(frozen=True)
class Verification:
    subject_id: int
    score: float
    threshold: float
    masked: bool
    same: bool
    face_quality: float | None = None  # the probe face's (embedder.quality), for the caller

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "score": round(self.score, 5),
            "threshold": round(self.threshold, 5),
            "masked": self.masked,
            "same": self.same,
            "face_quality": self.face_quality,
        }


class Searcher:
    """Identify and verify probe photos. Everything it needs is given: the ``encoder`` that
    made the gallery's embeddings (None: search with vectors only), the live ``index`` of the
    templates, the ``store`` for names and templates, and the checkpoint's calibration
    ``metadata``, whose thresholds at ``far`` (or the settings' CQAFACE_*THRESHOLD overrides,
    or a caller's per-call threshold) decide; ``settings`` also bound the photo's size and
    choose the masked probes' fusion."""

    def __init__(
        self,
        encoder: FaceEncoder | None,
        index: LiveIndex,
        store: GalleryStore,
        *,
        metadata: dict[str, Any],
        far: float | None = None,
        fusion: MaskFusion | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.store = store
        self.metadata = metadata
        self.settings = settings or Settings()
        self.far = far
        self.fusion = fusion or self.settings.mask_fusion
        if self.fusion not in MASK_FUSIONS:
            raise ValueError(f"fusion must be one of {MASK_FUSIONS}")

    @classmethod
    def for_encoder(
        cls, encoder: FaceEncoder, index: LiveIndex, store: GalleryStore, settings: Settings
    ) -> Searcher:
        """A searcher at the calibration ``encoder``'s checkpoint carries."""
        metadata = dict(encoder.embedder.metadata or {})
        return cls(encoder, index, store, metadata=metadata, settings=settings)

    def threshold(self, masked: bool) -> float:
        return calibrated(self.metadata, masked=masked, far=self.far, settings=self.settings)

    # ----- the call -------------------------------------------------------------------------

    def search(
        self,
        source: bytes | str | os.PathLike[str],
        *,
        k: int = 5,
        mask: MaskMode = "auto",
        threshold: float | None = None,
    ) -> Probe:
        """Every face of a probe photo, largest first, with its top-k and its decision, at
        ``threshold`` when given, else the calibrated one. Raises FaceInputError for a photo
        that cannot give a face (checked before the model runs), OSError for an unreadable
        path."""
        encoder = self._encoder()
        photo, found = encoder.read(source, "all", max_bytes=self.settings.max_photo_bytes)
        self.index.catch_up()
        faces = encoder.encode(found, mask)
        return Probe(photo, faces, self.identify_encoded(faces, k, threshold=threshold))

    def verify(
        self,
        source: bytes | str | os.PathLike[str],
        subject_id: int,
        *,
        mask: MaskMode = "auto",
        threshold: float | None = None,
    ) -> Verification:
        """The largest face of a probe photo against one subject (LookupError if it has no
        template), decided as :meth:`search` decides."""
        encoder = self._encoder()
        _, found = encoder.read(source, "largest", max_bytes=self.settings.max_photo_bytes)
        face = encoder.encode(found, mask)[0]
        answer = self.verify_vector(face.vector, subject_id, face.masked, threshold=threshold)
        return replace(answer, face_quality=face.face_quality)

    def _encoder(self) -> FaceEncoder:
        if self.encoder is None:
            raise RuntimeError("this searcher has no encoder: search with vectors instead")
        return self.encoder

    # ----- 1:N ------------------------------------------------------------------------------

    def scores(
        self, probes: np.ndarray, masked: np.ndarray, k: int
    ) -> list[list[tuple[int, float]]]:
        """Top-k (subject id, score) per probe, best first (fewer when the gallery is small)."""
        probes = np.atleast_2d(np.asarray(probes, np.float32))
        masked = np.broadcast_to(np.asarray(masked, bool), (len(probes),))
        normal_index = self.index.index(TemplateKind.NORMAL)
        out: list[list[tuple[int, float]]] = [[] for _ in probes]
        plain = np.flatnonzero(~masked) if self.fusion != "normal" else np.arange(len(probes))
        if len(plain):
            scores, ids = normal_index.search(probes[plain], k)
            for row, probe in enumerate(plain):
                out[probe] = [
                    (int(i), float(s)) for i, s in zip(ids[row], scores[row], strict=True) if i >= 0
                ]
        fused = np.setdiff1d(np.arange(len(probes)), plain)
        for probe in fused:
            out[probe] = self._fused(probes[probe], k)
        return out

    def _fused(self, probe: np.ndarray, k: int) -> list[tuple[int, float]]:
        """A masked probe against both templates of the candidates of both indexes."""
        normal_index = self.index.index(TemplateKind.NORMAL)
        masked_index = self.index.index(TemplateKind.MASKED)
        depth = max(k * _CANDIDATES_PER_K, _MIN_CANDIDATES)
        candidates = set()
        for index in (normal_index, masked_index):
            _, ids = index.search(probe, depth)
            candidates.update(int(i) for i in ids[0] if i >= 0)
        if not candidates:
            return []
        ids = np.fromiter(candidates, np.int64)
        normal, has_normal = normal_index.vectors(ids)
        masked, has_masked = masked_index.vectors(ids)
        s_normal = np.where(has_normal, normal @ probe, -np.inf)
        s_masked = np.where(has_masked, masked @ probe, s_normal)
        if self.fusion == "masked":
            fused = s_masked
        elif self.fusion == "max":
            fused = np.maximum(s_normal, s_masked)
        else:  # mean; a subject with one template kind only keeps that score
            fused = np.where(has_normal & has_masked, (s_normal + s_masked) / 2, s_masked)
        keep = has_normal  # only subjects identifiable by their normal template are answers
        order = np.argsort(-np.where(keep, fused, -np.inf), kind="stable")[:k]
        return [(int(ids[j]), float(fused[j])) for j in order if keep[j]]

    def identify_encoded(
        self, faces: list[EncodedFace], k: int = 5, *, threshold: float | None = None
    ) -> list[FaceAnswer]:
        """Answers for already-encoded probe faces."""
        if not faces:
            return []
        vectors = np.stack([f.vector for f in faces])
        masked = np.array([f.masked for f in faces])
        results = self.scores(vectors, masked, k)
        names = self.store.names(i for row in results for i, _ in row)
        answers = []
        for face, row in zip(faces, results, strict=True):
            matches = [Match(i, names.get(i, ""), s) for i, s in row]
            answers.append(
                FaceAnswer(
                    box=face.face.box,
                    masked=face.masked,
                    mask_probability=face.mask_probability,
                    quality=[float(q) for q in face.quality],
                    matches=matches,
                    decision=Decision.of(matches, self._limit(face.masked, threshold)),
                    face_quality=face.face_quality,
                )
            )
        return answers

    def _limit(self, masked: bool, threshold: float | None) -> float:
        return self.threshold(masked) if threshold is None else threshold

    # ----- 1:1 ------------------------------------------------------------------------------

    def verify_vector(
        self, probe: np.ndarray, subject_id: int, masked: bool, *, threshold: float | None = None
    ) -> Verification:
        """A probe embedding against one subject (LookupError if it has no template)."""
        probe = np.asarray(probe, np.float32)
        score = float(self.store.template(subject_id, TemplateKind.NORMAL) @ probe)
        if masked and self.fusion != "normal":
            try:
                masked_score = float(self.store.template(subject_id, TemplateKind.MASKED) @ probe)
            except LookupError:
                masked_score = score
            score = {
                "masked": masked_score,
                "max": max(score, masked_score),
                "mean": (score + masked_score) / 2,
            }[self.fusion]
        decision = Decision.of([Match(subject_id, "", score)], self._limit(masked, threshold))
        return Verification(
            subject_id, score, decision.threshold, masked, same=decision.match is not None
        )
