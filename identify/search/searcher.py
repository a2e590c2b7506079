"""Search: identify (1:N) and verify (1:1), with an open-set decision.

A probe face's top-k subjects come from the normal-template index; the Rank-1 subject is the
answer only when its score reaches the threshold for the target FAR, else the answer is
"unknown". Masked probes are judged against their own (masked) threshold and, by the fusion
policy (CQAFACE_MASK_FUSION), also scored against the subjects' masked templates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedder.imageio import load_image
from identify import settings
from identify.gallery.enrolment import Gallery
from identify.gallery.tables import TemplateKind
from identify.search.encode import EncodedFace, MaskMode
from identify.search.thresholds import threshold

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

    def to_json(self, path: str | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {} if path is None else {"path": path}
        record.update(
            box=None if self.box is None else [round(float(v), 2) for v in self.box],
            masked=self.masked,
            mask_probability=(
                None if self.mask_probability is None else round(self.mask_probability, 4)
            ),
            quality=[round(q, 4) for q in self.quality],
            matches=[m.to_json() for m in self.matches],
            decision=self.decision.to_json(),
        )
        return record


@dataclass(frozen=True)
class Verification:
    subject_id: int
    score: float
    threshold: float
    masked: bool

    @property
    def same(self) -> bool:
        return self.score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "score": round(self.score, 5),
            "threshold": round(self.threshold, 5),
            "masked": self.masked,
            "same": self.same,
        }


class Searcher:
    """Identify and verify probes against a gallery, with thresholds from ``metadata`` (the
    checkpoint's calibration) at ``far``, or the CQAFACE_*THRESHOLD overrides."""

    def __init__(
        self,
        gallery: Gallery,
        *,
        metadata: dict[str, Any] | None = None,
        far: float | None = None,
        fusion: settings.MaskFusion | None = None,
    ) -> None:
        self.gallery = gallery
        self.metadata = metadata if metadata is not None else _metadata(gallery)
        self.far = far
        self.fusion = fusion or settings.mask_fusion()
        if self.fusion not in settings.MASK_FUSIONS:
            raise ValueError(f"fusion must be one of {settings.MASK_FUSIONS}")

    def threshold(self, masked: bool) -> float:
        return threshold(self.metadata, masked=masked, far=self.far)

    # ----- 1:N ------------------------------------------------------------------------------

    def scores(
        self, probes: np.ndarray, masked: np.ndarray, k: int
    ) -> list[list[tuple[int, float]]]:
        """Top-k (subject id, score) per probe, best first (fewer when the gallery is small)."""
        probes = np.atleast_2d(np.asarray(probes, np.float32))
        masked = np.broadcast_to(np.asarray(masked, bool), (len(probes),))
        normal_index = self.gallery.index(TemplateKind.NORMAL)
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
        normal_index = self.gallery.index(TemplateKind.NORMAL)
        masked_index = self.gallery.index(TemplateKind.MASKED)
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

    def identify_encoded(self, faces: list[EncodedFace], k: int = 5) -> list[FaceAnswer]:
        """Answers for already-encoded probe faces."""
        if not faces:
            return []
        vectors = np.stack([f.vector for f in faces])
        masked = np.array([f.masked for f in faces])
        results = self.scores(vectors, masked, k)
        names = self.gallery.names(i for row in results for i, _ in row)
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
                    decision=self._decide(matches, face.masked),
                )
            )
        return answers

    def _decide(self, matches: list[Match], masked: bool) -> Decision:
        limit = self.threshold(masked)
        best = matches[0] if matches and matches[0].score >= limit else None
        return Decision(best, limit)

    def identify(
        self, source: bytes | str | os.PathLike[str], *, k: int = 5, mask: MaskMode = "auto"
    ) -> list[FaceAnswer]:
        """Every face of a probe photo searched, largest first. Raises FaceInputError for a
        photo that cannot give a face (the caller reports it)."""
        encoder = self._encoder()
        faces = encoder.faces(load_image(source), "all")
        return self.identify_encoded(encoder.encode(faces, mask), k)

    # ----- 1:1 ------------------------------------------------------------------------------

    def verify_vector(self, probe: np.ndarray, subject_id: int, masked: bool) -> Verification:
        """A probe embedding against one subject (LookupError if it has no template)."""
        probe = np.asarray(probe, np.float32)
        score = float(self.gallery.template(subject_id, TemplateKind.NORMAL) @ probe)
        if masked and self.fusion != "normal":
            try:
                masked_score = float(self.gallery.template(subject_id, TemplateKind.MASKED) @ probe)
            except LookupError:
                masked_score = score
            score = {
                "masked": masked_score,
                "max": max(score, masked_score),
                "mean": (score + masked_score) / 2,
            }[self.fusion]
        return Verification(subject_id, score, self.threshold(masked), masked)

    def verify(
        self, source: bytes | str | os.PathLike[str], subject_id: int, *, mask: MaskMode = "auto"
    ) -> Verification:
        """The largest face of a probe photo against one subject."""
        encoder = self._encoder()
        face = encoder.encode(encoder.faces(load_image(source), "largest"), mask)[0]
        return self.verify_vector(face.vector, subject_id, face.masked)

    def _encoder(self) -> Any:
        if self.gallery.encoder is None:
            raise RuntimeError("this gallery has no encoder: search with vectors instead")
        return self.gallery.encoder


def _metadata(gallery: Gallery) -> dict[str, Any]:
    encoder = gallery.encoder
    return dict(getattr(getattr(encoder, "embedder", None), "metadata", None) or {})
