"""Does the face quality score (embedder/quality.py) mean something? Error-versus-reject curves.

    make quality-erc    # benchmarks/quality_erc.py --out benchmarks/results/quality-erc.json
                        #   --plot docs/benchmarks/quality-erc.png

The standard test of a face image quality measure (Grother and Tabassi; ISO/IEC 29794-1):
reject the lowest-quality x% of probes, x from 0 to 30, and plot the false non-match rate at a
threshold fixed for FAR 1e-3 over all impostor comparisons before any rejection. A useful
measure makes the curve fall fast; random rejection leaves it flat.

Two sets, neither seen by the fit (trainer/quality_fit.py fits on half of the validation
people outside celeba-photos):
- ``validation``: the aligned celeba-112 crops of the other validation people (the other half
  and the 100 celeba-photos people); detection score and box from celeba-112's landmarks.csv.
- ``photos``: celeba-photos through the served path (MTCNN, the largest face, alignment, the
  embedder), ``--per-identity`` photos of each of the 100 people (a subsample, to stay within
  minutes on two busy cores).
Every face is a probe against every other face: a rejected face's comparisons all go. Measures:
the quality score, face size alone, each of the score's other features alone, and random
rejection (the mean of 20 seeded draws).

The default minimum quality to enrol (CQAFACE_ENROL_MIN_QUALITY) is read from ``gate``: the
validation set's real faces and one degraded copy of each (trainer.quality_fit.degrade, seed
0), what each candidate minimum refuses and whether the refused copies would have matched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedder import quality
from trainer import quality_fit as fit

REJECT = [round(0.02 * i, 2) for i in range(16)]  # 0 to 30%
FAR = 1e-3
RANDOM_DRAWS = 20


def comparisons(faces: fit.FaceSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, score, genuine) of every pair of faces, i < j."""
    similarity = faces.vectors @ faces.vectors.T
    i, j = np.triu_indices(len(faces.identity), 1)
    return i, j, similarity[i, j], faces.identity[i] == faces.identity[j]


def erc(quality_of: np.ndarray, pairs: tuple[np.ndarray, ...], threshold: float) -> list[float]:
    """FNMR at ``threshold`` after rejecting the lowest-quality x% of faces, per x in REJECT
    (ties broken by position, so that exactly x% go)."""
    i, j, score, genuine = pairs
    order = np.lexsort((np.arange(len(quality_of)), quality_of))
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    out = []
    for x in REJECT:
        cut = round(x * len(order))
        kept = genuine & (rank[i] >= cut) & (rank[j] >= cut)
        out.append(float((score[kept] < threshold).mean()) if kept.any() else float("nan"))
    return out


def curves(faces: fit.FaceSet, scoring: quality.QualityFit) -> dict[str, Any]:
    pairs = comparisons(faces)
    _, _, score, genuine = pairs
    threshold = float(np.quantile(score[~genuine], 1 - FAR))
    measures = {"quality score": quality.score_features(faces.features, scoring)}
    measures["face size"] = faces.features[:, quality.FEATURES.index("size")]
    for name in quality.FEATURES:
        if name != "size":
            measures[f"{name} alone"] = faces.features[:, quality.FEATURES.index(name)]
    result = {name: erc(values, pairs, threshold) for name, values in measures.items()}
    rng = np.random.default_rng(0)
    draws = [erc(rng.random(len(score)), pairs, threshold) for _ in range(RANDOM_DRAWS)]
    result["random"] = [float(v) for v in np.mean(draws, 0)]
    return {
        "faces": len(faces.identity),
        "people": len(np.unique(faces.identity)),
        "genuine_pairs": int(genuine.sum()),
        "impostor_pairs": int((~genuine).sum()),
        "threshold_far_1e-3": round(threshold, 5),
        "reject": REJECT,
        "fnmr": {k: [round(v, 5) for v in values] for k, values in result.items()},
        "mean_fnmr_0_30": {k: round(float(np.mean(v)), 5) for k, v in result.items()},
        "quality_quantiles": {
            f"p{p}": round(float(np.percentile(measures["quality score"], p)), 4)
            for p in (1, 5, 10, 20, 30, 50)
        },
    }


GATES = (0.05, 0.1, 0.2, 0.3, 0.5)


def gate(faces: fit.FaceSet, threshold: float, scoring: quality.QualityFit) -> list[dict[str, Any]]:
    """What a minimum quality to enrol would refuse, on real faces and their degraded copies:
    per minimum, the share refused of each, and how many of the refused and of the admitted
    copies still pass the FAR 1e-3 threshold against their own template (made from the
    person's other real faces): a good minimum refuses faces that would not have matched."""
    cosine = fit.own_template_cosine(faces)
    scores = quality.score_features(faces.features, scoring)
    ok, real = ~np.isnan(cosine), faces.real
    rows = []
    for minimum in GATES:
        under = scores < minimum
        copies_under, copies_over = ok & ~real & under, ok & ~real & ~under
        rows.append(
            {
                "min_quality": minimum,
                "real_refused": round(float(under[ok & real].mean()), 4),
                "copies_refused": round(float(under[ok & ~real].mean()), 4),
                "refused_copies_that_match": round(
                    float((cosine[copies_under] >= threshold).mean()), 4
                )
                if copies_under.any()
                else None,
                "admitted_copies_that_match": round(
                    float((cosine[copies_over] >= threshold).mean()), 4
                ),
            }
        )
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    for ax, (name, data) in zip(fig.subplots(1, 2), results["sets"].items(), strict=True):
        x = [100 * r for r in data["reject"]]
        for measure in ("quality score", "face size", "random"):
            ax.plot(x, data["fnmr"][measure], marker=".", label=measure)
        ax.set_title(f"{name}: {data['faces']} faces, {data['people']} people")
        ax.set_xlabel("lowest-quality probes rejected (%)")
        ax.set_ylabel("FNMR at FAR 1e-3")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def photo_faces(people: list[str], per_identity: int) -> tuple[fit.FaceSet, int]:
    """celeba-photos through the served encoder; (faces, photos without a face)."""
    from embedder.errors import FaceInputError
    from embedder.imageio import load_image
    from identify.search.encode import FaceEncoder
    from trainer.pairs import list_images

    encoder = FaceEncoder.load()
    names, faces, misses = [], [], 0
    for identity in people:
        for path in list_images(Path(fit.shared_data("celeba-photos", identity)))[:per_identity]:
            try:
                faces.append(encoder.faces(load_image(path.read_bytes()), "largest")[0])
                names.append(identity)
            except FaceInputError:
                misses += 1
    result = encoder.embedder.embed([f.crop for f in faces])  # what FaceEncoder.encode runs
    features = [
        quality.features(q, a, f.score, quality.box_size(f.box), quality.sharpness(f.crop))
        for f, q, a in zip(faces, result.quality, result.agreement, strict=True)
    ]
    vectors = np.asarray(result.vectors, np.float32)
    return fit.FaceSet(np.array(names), vectors, np.array(features), np.arange(len(names))), misses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality-erc.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/benchmarks/quality-erc.png"))
    parser.add_argument("--per-identity", type=int, default=12, help="celeba-photos per person")
    args = parser.parse_args(argv)
    from embedder import runtime

    started = time.perf_counter()
    _, held_out, photo_people = fit.validation_people()
    embedder = runtime.load_embedder()
    scoring = embedder.quality_fit
    if scoring is None:
        sys.exit(
            f"{embedder.version} has no quality fit: run python -m trainer.quality_fit --write"
        )
    with_copies = fit.crop_faces(held_out + photo_people, embedder, degraded=True)
    validation = with_copies.real_faces()
    photos, misses = photo_faces(photo_people, args.per_identity)
    results = {
        "command": "python benchmarks/quality_erc.py " + " ".join(argv or sys.argv[1:]),
        "model": embedder.version,
        "quality_fit": scoring.to_metadata(),
        "sets": {"validation": curves(validation, scoring), "photos": curves(photos, scoring)},
        "gate": gate(with_copies, fit.same_person_threshold(embedder.metadata), scoring),
        "photos_per_identity": args.per_identity,
        "photos_without_a_face": misses,
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.plot)
    for name, data in results["sets"].items():
        print(f"{name}: {data['faces']} faces, threshold {data['threshold_far_1e-3']}")
        for measure, values in data["fnmr"].items():
            shown = " ".join(f"{v:.4f}" for v in values[::5])
            print(f"  {measure:24s} FNMR at 0/10/20/30%: {shown}  mean {np.mean(values):.4f}")
    for row in results["gate"]:
        print("gate", row)


if __name__ == "__main__":
    main()
