"""Fit the face quality score (embedder/quality.py) on validation people, never trained on.

    python -m trainer.quality_fit [--model PATH] [--write]
        # prints the fit for the checkpoint (default: the served model); --write stores it in
        # the checkpoint's metadata (embedder.quality.METADATA_KEY)
    python -m trainer.quality_fit --model PATH --write-fit '{"mean": [...], ...}'
        # stores a fit made before (JSON of QualityFit.to_metadata) without fitting

Faces: the 400 validation identities of celeba-112 (trainer/split.py, seed 0), as the aligned
crops the model was validated on; their detection score and box come from celeba-112's
landmarks.csv (the same MTCNN, on the source photos), so every feature exists for them.
The fit uses the validation people *not* in celeba-photos, every other one in sorted order,
each real face with one degraded copy (blurred, or at a lower resolution: :func:`degrade`);
the rest of the validation people and celeba-photos are kept for the error-versus-reject
curve (benchmarks/quality_erc.py), so the curve is not measured on the faces the fit saw.

Target: a face is useful when its cosine to its identity's template made from the identity's
OTHER faces passes the model's calibrated threshold at FAR 1e-3 (what the served decision
does). The score is the logistic model's probability of that, in [0, 1].
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from embedder import checkpoint, quality, settings
from trainer.config import PROJECT_ROOT, shared_data
from trainer.pairs import list_identities, list_images
from trainer.split import make_split

CACHE = PROJECT_ROOT / "var" / "quality"


@dataclass
class FaceSet:
    """Per face: identity, embedding, raw quality features (embedder.quality.FEATURES), and
    the clean face it was degraded from (``origin``: its own index for a real face)."""

    identity: np.ndarray  # (N,) str
    vectors: np.ndarray  # (N, D) float32 unit
    features: np.ndarray  # (N, len(FEATURES))
    origin: np.ndarray  # (N,) int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> FaceSet:
        data = np.load(path)
        return cls(data["identity"], data["vectors"], data["features"], data["origin"])

    @property
    def real(self) -> np.ndarray:
        return self.origin == np.arange(len(self.origin))

    def real_faces(self) -> FaceSet:
        """The real faces only (no degraded copies)."""
        keep = self.real
        return FaceSet(
            self.identity[keep], self.vectors[keep], self.features[keep], np.arange(keep.sum())
        )


def validation_people() -> tuple[list[str], list[str], list[str]]:
    """(fit people, other validation people, celeba-photos people) of celeba-112."""
    root = Path(shared_data("celeba-112"))
    photos = list_identities(Path(shared_data("celeba-photos")))
    split = make_split(list_identities(root), holdout=photos, n_validation=400, seed=0)
    rest = [name for name in split.validation if name not in set(photos)]
    return rest[::2], rest[1::2], photos


def _landmarks() -> dict[tuple[str, str], tuple[float, float]]:
    """(identity, image) -> (detection score, box size) from celeba-112's landmarks.csv."""
    rows = {}
    with open(shared_data("celeba-112", "landmarks.csv")) as f:
        for row in csv.DictReader(f):
            box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
            rows[row["identity"], row["image"]] = (float(row["score"]), quality.box_size(box))
    return rows


def degrade(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A poorer copy of a real crop and the factor its face size shrinks by: blurred
    (Gaussian, sigma 0.5-3.5 px), or seen at a lower resolution (14-56 px and back up). The
    validation photos are nearly all sharp, large and frontal; without such copies the fit
    would never see what makes a face poor."""
    if rng.random() < 0.5:
        return cv2.GaussianBlur(crop, (0, 0), float(rng.uniform(0.5, 3.5))), 1.0
    side = int(rng.integers(14, 57))
    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR), side / 112


def crop_faces(identities: list[str], embedder: object, *, degraded: bool) -> FaceSet:
    """The celeba-112 crops of ``identities`` embedded, with their features; ``degraded``
    adds one degraded copy of each (:func:`degrade`, seed 0)."""
    root = Path(shared_data("celeba-112"))
    meta = _landmarks()
    rng = np.random.default_rng(0)
    names, crops, rows, origin = [], [], [], []
    for identity in identities:
        for path in list_images(root / identity):
            crop = np.asarray(Image.open(path).convert("RGB"))
            score, size = meta[identity, path.stem]
            index = len(names)
            copies = [(crop, 1.0), degrade(crop, rng)] if degraded else [(crop, 1.0)]
            for copy, factor in copies:
                names.append(identity)
                crops.append(copy)
                rows.append((score, size * factor, quality.sharpness(copy)))
                origin.append(index)
    result = embedder.embed(crops)  # type: ignore[attr-defined]
    feats = [
        quality.features(q, a, score, size, sharp)
        for q, a, (score, size, sharp) in zip(result.quality, result.agreement, rows, strict=True)
    ]
    return FaceSet(
        np.array(names), np.asarray(result.vectors, np.float32), np.array(feats), np.array(origin)
    )


def own_template_cosine(faces: FaceSet) -> np.ndarray:
    """Each face's cosine to its identity's template (normalised mean) of its OTHER real
    faces (a degraded copy's own original left out too); NaN for a face alone."""
    out = np.full(len(faces.identity), np.nan)
    real = faces.real
    for identity in np.unique(faces.identity):
        mine = faces.identity == identity
        clean = np.flatnonzero(mine & real)
        if len(clean) < 2:
            continue
        total = faces.vectors[clean].astype(np.float64).sum(0)
        for i in np.flatnonzero(mine):
            template = total - faces.vectors[faces.origin[i]]
            out[i] = faces.vectors[i] @ template / np.linalg.norm(template)
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights (intercept last) of a ridge-penalised logistic regression, by Newton's method."""
    design = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def same_person_threshold(metadata: dict) -> float:
    """The checkpoint's calibrated cosine threshold for bare faces at FAR 1e-3."""
    return float(metadata["thresholds"]["normal"]["0.001"])


def cached(name: str, build: object) -> FaceSet:
    """``build()``'s faces, kept in var/quality/<name>.npz; ``name`` must carry the model
    version, since the features (part qualities, flip agreement) are the model's outputs."""
    path = CACHE / f"{name}.npz"
    if path.exists():
        return FaceSet.load(path)
    faces = build()  # type: ignore[operator]
    faces.save(path)
    return faces


def fit(faces: FaceSet, threshold: float) -> dict:
    """The quality fit (QualityFit.to_metadata's fields) on ``faces``, with what it saw."""
    cosine = own_template_cosine(faces)
    usable = ~np.isnan(cosine)
    x, y = faces.features[usable], (cosine[usable] >= threshold).astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    w = fit_logistic((x - mean) / std, y)
    return {
        "features": list(quality.FEATURES),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "coef": [round(float(v), 6) for v in w[:-1]],
        "intercept": round(float(w[-1]), 6),
        "faces": int((usable & faces.real).sum()),
        "degraded_copies": int((usable & ~faces.real).sum()),
        "people": len(np.unique(faces.identity)),
        "useful_share": round(float(y.mean()), 4),
        "threshold": threshold,
    }


def write_fit(scoring: quality.QualityFit, path: Path, **report: object) -> None:
    """Store ``scoring`` in the metadata of the checkpoint at ``path`` (the way
    `cqaface eval calibrate --write` stores thresholds), replacing any fit it had."""
    saved = checkpoint.load(path)
    saved.metadata[quality.METADATA_KEY] = scoring.to_metadata(**report)
    checkpoint.save(saved, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the served model)")
    parser.add_argument("--write", action="store_true", help="store the fit in the checkpoint")
    parser.add_argument(
        "--write-fit", metavar="JSON", help="store this fit in the checkpoint instead of fitting"
    )
    args = parser.parse_args(argv)
    path = args.model or settings.model_path()
    if args.write_fit:
        given = json.loads(args.write_fit)
        write_fit(quality.QualityFit.from_dict(given), path, **_report(given))
        return
    from embedder import runtime

    embedder = runtime.load_embedder(path)
    fit_people, _, _ = validation_people()
    faces = cached(
        f"fit-crops-{embedder.version}",
        lambda: crop_faces(fit_people, embedder, degraded=True),
    )
    result = fit(faces, same_person_threshold(embedder.metadata))
    print(json.dumps(result, indent=1))
    if args.write:
        write_fit(quality.QualityFit.from_dict(result), path, **_report(result))


def _report(saved: dict) -> dict:
    """What a fit's JSON holds besides the fit itself (faces, people, threshold...)."""
    own = {"features", "mean", "std", "coef", "intercept"}
    return {k: v for k, v in saved.items() if k not in own}


if __name__ == "__main__":
    main()
