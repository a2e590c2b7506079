"""Search galleries that look like faces: the shipped model's templates of the celeba-112
people, genuine probes of the same people, and a synthetic crowd drawn from those templates'
distribution.

Random 512-d unit vectors are nearly orthogonal to one another, so any index finds a planted
match among them. Face embeddings crowd into a cone (impostors score 0.2-0.5, a genuine probe
0.3-0.9), which is where product quantisation loses. So:

- a template is the mean of up to 5 aligned crops of a person, normalised, embedded as served
  (flip test); the person's next crop is the probe (people with a single crop are left out);
- past the ~9,100 real people, templates are drawn from a Gaussian with the real templates' mean
  and covariance, then normalised.

Embedding ~46,000 crops takes about 12 minutes on two cores, so the vectors are cached under
var/ by model version (an npz; delete it to recompute).

    .venv/bin/python benchmarks/real_gallery.py   # builds the cache and prints its statistics
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
TEMPLATE_CROPS = 5
BATCH = 64


@dataclass
class RealFaces:
    """One template and one genuine probe per real person (row i of each is person i)."""

    templates: np.ndarray  # (P, 512) float32, unit
    probes: np.ndarray  # (P, 512) float32, unit
    version: str

    def crowd(self, n: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
        """``n`` unit vectors from the Gaussian fitted to the real templates."""
        mean = self.templates.mean(0)
        cov = np.cov(self.templates, rowvar=False)
        values, vectors = np.linalg.eigh(cov)
        factor = (vectors * np.sqrt(np.clip(values, 0.0, None))).astype(np.float32)
        out = np.empty((n, self.templates.shape[1]), np.float32)
        for start in range(0, n, chunk):
            z = rng.standard_normal((min(chunk, n - start), len(mean)), dtype=np.float32)
            block = mean + z @ factor.T
            out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out


def _people(root: Path) -> list[list[Path]]:
    people = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        crops = sorted(folder.glob("*.webp"))
        if len(crops) >= 2:
            people.append(crops[: TEMPLATE_CROPS + 1])
    return people


def _embed_people(people: list[list[Path]]) -> tuple[np.ndarray, np.ndarray, str]:
    from embedder.imageio import load_image
    from embedder.inference import Embedder

    embedder = Embedder.load(batch_size=16)  # 16 runs about twice as fast as 64 on a CPU
    paths = [p for crops in people for p in crops]
    vectors = np.empty((len(paths), 512), np.float32)
    started = time.perf_counter()
    for start in range(0, len(paths), BATCH):
        batch = np.stack([load_image(p) for p in paths[start : start + BATCH]])
        vectors[start : start + len(batch)] = embedder.embed(batch).vectors
        if start // BATCH % 50 == 0:
            rate = (start + len(batch)) / (time.perf_counter() - started)
            print(f"  {start + len(batch):,}/{len(paths):,} crops, {rate:.0f}/s", flush=True)
    templates, probes, row = [], [], 0
    for crops in people:
        own = vectors[row : row + len(crops)]
        row += len(crops)
        mean = own[:-1].mean(0)
        templates.append(mean / np.linalg.norm(mean))
        probes.append(own[-1])
    return np.stack(templates), np.stack(probes), embedder.version


def load(cache_dir: Path = ROOT / "var") -> RealFaces:
    """The cached real templates and probes of the shipped model, computed on first use."""
    from embedder import checkpoint, settings

    version = checkpoint.load(settings.model_path()).version
    path = cache_dir / f"real-faces-{version}.npz"
    if not path.exists():
        print(f"embedding celeba-112 for {path} (once)", flush=True)
        templates, probes, _ = _embed_people(_people(DATA / "celeba-112"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, templates=templates, probes=probes)
        tmp.replace(path)
    with np.load(path) as data:
        return RealFaces(data["templates"], data["probes"], version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "var")
    args = parser.parse_args()
    faces = load(args.cache_dir)
    genuine = (faces.templates * faces.probes).sum(1)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(faces.templates), (20_000, 2))
    pick = pick[pick[:, 0] != pick[:, 1]]
    impostor = (faces.probes[pick[:, 0]] * faces.templates[pick[:, 1]]).sum(1)
    crowd = faces.crowd(2_000, rng)
    synthetic = faces.probes[: len(crowd)] @ crowd.T
    for name, scores in (("genuine", genuine), ("impostor", impostor), ("crowd", synthetic)):
        q = np.percentile(scores, [1, 50, 99])
        print(f"{name:<9} cosine p1 {q[0]:.3f}  p50 {q[1]:.3f}  p99 {q[2]:.3f}")
    print(f"{len(faces.templates):,} real people, model {faces.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
