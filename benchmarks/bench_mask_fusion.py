"""How a masked probe is best scored (CQAFACE_MASK_FUSION): against the normal template only,
the masked template only (built from synthetic-masked copies of the gallery faces), or their
max or mean.

    make bench-mask-fusion    # benchmarks/bench_mask_fusion.py --out var/bench-mask-fusion.json

The 100 held-out identities of celeba-photos (never trained on), as their aligned crops
(celeba-112): 5 gallery faces each, up to 5 other faces as probes with a synthetic mask drawn
on (seeded per face). Enrolled and searched through the real GalleryStore and Searcher (SQLite,
FAISS), so what is measured is what serves. Per policy: Rank-1/Rank-5, TAR at FAR 1e-2 / 1e-3
of the masked probes against the other subjects' templates (the policy's own impostor scores),
and, at the model's calibrated masked threshold for FAR 1e-3, the share of genuine scores and
of impostor scores above it (what the served open-set decision does). The unmasked probes
against the normal templates are the reference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedder.inference import Embedder
from embedder.masks import apply_mask
from identify.gallery import migrate
from identify.gallery.db import make_engine
from identify.gallery.store import FaceRecord, GalleryStore
from identify.search.encode import FaceEncoder
from identify.search.live_index import LiveIndex
from identify.search.searcher import Searcher
from identify.search.thresholds import threshold
from identify.settings import Settings
from trainer.config import shared_data

POLICIES = ("normal", "masked", "max", "mean")


def crops_of(identity: str, root: Path) -> list[tuple[str, np.ndarray]]:
    paths = sorted((root / identity).glob("*.webp"))
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def seeded_mask(crop: np.ndarray, key: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return apply_mask(crop, rng=seed).image


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    threshold = np.quantile(impostor, 1 - far)
    return float((genuine > threshold).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL/shipped)")
    parser.add_argument("--gallery", type=int, default=5, help="gallery faces per identity")
    parser.add_argument("--probes", type=int, default=5, help="probe faces per identity")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("var/bench-mask-fusion.json"))
    args = parser.parse_args()
    if min(args.gallery, args.probes, args.identities) < 1:
        parser.error("--gallery, --probes and --identities must be at least 1")
    started = time.perf_counter()
    photos = Path(shared_data("celeba-photos"))
    aligned = Path(shared_data("celeba-112"))
    for folder in (photos, aligned):
        if not folder.is_dir():
            parser.error(f"no data set at {folder} (CQAFACE_SHARED_DATA)")
    identities = sorted(p.name for p in photos.iterdir() if p.is_dir())[: args.identities]
    embedder = Embedder.load(args.model, device="cpu")
    encoder = FaceEncoder(embedder)
    workdir = Path(tempfile.mkdtemp(prefix="bench-mask-fusion-"))
    url = f"sqlite:///{workdir / 'gallery.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    gallery = GalleryStore.for_encoder(engine, encoder)
    index = LiveIndex(
        engine, model_version=gallery.model_version, dim=gallery.dim, index_dir=workdir / "index"
    )
    probe_vectors, masked_probe_vectors, labels = [], [], []
    subject_of: dict[str, int] = {}
    for identity in identities:
        crops = crops_of(identity, aligned)
        if len(crops) < args.gallery + 1:
            continue
        enrol = crops[: args.gallery]
        probes = crops[args.gallery : args.gallery + args.probes]
        normal = embedder.embed([c for _, c in enrol]).vectors
        masked = embedder.embed([seeded_mask(c, f"gallery/{n}") for n, c in enrol]).vectors
        for (name, _), n_vec, m_vec in zip(enrol, normal, masked, strict=True):
            result = gallery.add_image(
                identity,
                sha256=hashlib.sha256(f"{identity}/{name}".encode()).hexdigest(),
                size_bytes=0,
                source=f"{identity}/{name}",
                faces=[
                    FaceRecord(
                        box=(0, 0, 112, 112),
                        landmarks=np.zeros((5, 2)),
                        score=1.0,
                        vector=n_vec,
                        masked_vector=m_vec,
                    )
                ],
            )
            subject_of[identity] = result.subject_id
        probe_vectors.append(embedder.embed([c for _, c in probes]).vectors)
        masked_probe_vectors.append(
            embedder.embed([seeded_mask(c, f"probe/{n}") for n, c in probes]).vectors
        )
        labels += [subject_of[identity]] * len(probes)
    if not labels:
        parser.error(f"no identity has {args.gallery + 1} crops in {aligned}: lower --gallery")
    labels_arr = np.asarray(labels)
    plain = np.concatenate(probe_vectors)
    masked_probes = np.concatenate(masked_probe_vectors)
    k = len(subject_of)  # every subject scored: ranks and impostor scores from one search
    report: dict[str, Any] = {
        "model_version": embedder.version,
        "identities": len(subject_of),
        "probes": len(labels),
        "gallery_per_identity": args.gallery,
        "policies": {},
    }

    served = (
        threshold(embedder.metadata, masked=True, far=1e-3, settings=Settings.from_env())
        if embedder.metadata
        else None
    )  # as a server of this environment would (a CQAFACE_MASKED_THRESHOLD wins)
    report["served_masked_threshold_far_1e-3"] = served

    def measure(searcher: Searcher, probes: np.ndarray, masked: bool) -> dict[str, float]:
        rows = searcher.scores(probes, np.full(len(probes), masked), k)
        ranks, genuine, impostor = [], [], []
        for label, row in zip(labels_arr, rows, strict=True):
            ids = [i for i, _ in row]
            ranks.append(ids.index(label) if label in ids else k)
            genuine += [s for i, s in row if i == label]
            impostor += [s for i, s in row if i != label]
        ranks_arr = np.asarray(ranks)
        genuine_arr, impostor_arr = np.array(genuine), np.array(impostor)
        at_served = {}
        if served is not None and masked:
            at_served = {
                "genuine_above_served_threshold": round(float((genuine_arr >= served).mean()), 4),
                "impostors_above_served_threshold": round(
                    float((impostor_arr >= served).mean()), 5
                ),
            }
        return {
            "rank1": round(float((ranks_arr == 0).mean()), 4),
            "rank5": round(float((ranks_arr < 5).mean()), 4),
            "tar_at_far_1e-2": round(tar_at_far(genuine_arr, impostor_arr, 1e-2), 4),
            "tar_at_far_1e-3": round(tar_at_far(genuine_arr, impostor_arr, 1e-3), 4),
            **at_served,
        }

    metadata = {"thresholds": {}}
    report["unmasked_probes"] = measure(
        Searcher(None, index, gallery, metadata=metadata, fusion="normal"), plain, masked=False
    )
    for policy in POLICIES:
        searcher = Searcher(None, index, gallery, metadata=metadata, fusion=policy)
        report["policies"][policy] = measure(searcher, masked_probes, masked=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"model {embedder.version}: {len(subject_of)} identities, {len(labels)} probes each way")
    print(f"  unmasked probes, normal templates: {report['unmasked_probes']}")
    for policy in POLICIES:
        print(f"  masked probes, {policy:<6}: {report['policies'][policy]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
