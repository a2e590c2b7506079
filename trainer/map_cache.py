"""Stage 1 on a pretrained stem: its feature maps, computed once, on disk.

With the stem frozen, every epoch would run the same stem over the same faces; on two CPU cores
that is almost all the cost. So each training face's last-stage map is computed once, in fp16
(512x7x7: 50 KB), for two variants: the face and a synthetic-masked copy, both mirrored or
both not (at even odds, fixed per face). The pretrained network's own embedding of the bare
face is stored beside them as the distillation target: a masked face learns to land where its
bare face lands. So is the share of each map cell that the synthetic mask covers: free ground
truth for "this part is occluded" (trainer/occlusion.py). Heads then train on the
memory-mapped maps at thousands of samples per second.

The cache is a folder of shards of `SHARD` faces in the training set's order (identities
sorted), each written whole or not at all: building resumes at the first missing shard, and a
run on the first N identities needs only the shards that cover their faces.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedder.inference import preprocess
from embedder.masks import apply_mask
from embedder.model import CQAFace
from trainer.distill import Teacher
from trainer.folder_dataset import FolderDataset
from trainer.occlusion import cell_cover

VARIANTS = ("bare", "masked")
SHARD = 1024
# Faces per stem pass: on CPU, small passes keep activations in cache (a pass of 8 or 32 costs
# half as much per face as one of 128 on two cores).
PASS = 32
META = "meta.json"


@dataclass(frozen=True)
class CacheKey:
    """What a cache was built from; a run refuses a cache built from anything else."""

    stem: str
    init_sha256: str
    seed: int


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _shard_files(folder: Path, k: int) -> tuple[Path, Path]:
    return folder / f"maps-{k:05d}.npy", folder / f"teacher-{k:05d}.npy"


def _cover_file(folder: Path, k: int) -> Path:
    return folder / f"cover-{k:05d}.npy"


def _covers(folder: Path, k: int, rows: range) -> bool:
    """Shard k is written and holds `rows` (a run on fewer faces may have written it short)."""
    teacher = _shard_files(folder, k)[1]
    return teacher.is_file() and k * SHARD + len(np.load(teacher, mmap_mode="r")) >= rows.stop


def _rows(k: int, size: int) -> range:
    return range(k * SHARD, min((k + 1) * SHARD, size))


def _check(folder: Path, key: CacheKey, names: list[str]) -> None:
    """Writes the folder's record on first use; afterwards the key must match and the faces
    must extend, or be a prefix of, the faces it was built for."""
    path = folder / META
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _write_meta(path, {"key": asdict(key), "variants": VARIANTS, "faces": names})
        return
    meta = json.loads(path.read_text())
    if CacheKey(**meta["key"]) != key:
        raise ValueError(f"{folder}: built from {meta['key']}, not {asdict(key)}")
    known = meta["faces"]
    common = min(len(known), len(names))
    if known[:common] != names[:common]:
        raise ValueError(f"{folder}: built for other faces (first difference before {common})")
    if len(names) > len(known):
        _write_meta(path, {**meta, "faces": names})


def _write_meta(path: Path, meta: dict[str, object]) -> None:
    """Whole or not at all: a build interrupted here leaves the previous record readable."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(meta))
    partial.replace(path)


def _names(faces: FolderDataset) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in faces.paths]


class MapCache:
    """The maps (N, 2, C, H, W) fp16 and teacher vectors (N, D) of a training set's faces."""

    def __init__(self, folder: Path, faces: FolderDataset, key: CacheKey) -> None:
        _check(folder, key, _names(faces))
        shards = range(-(-len(faces) // SHARD))
        missing = [k for k in shards if not _covers(folder, k, _rows(k, len(faces)))]
        if missing:
            raise ValueError(f"{folder}: map cache incomplete (shard {missing[0]} missing)")
        self.shards = [np.load(_shard_files(folder, k)[0], mmap_mode="r") for k in shards]
        self.covers = [np.load(_cover_file(folder, k)) for k in shards]
        vectors = np.concatenate([np.load(_shard_files(folder, k)[1]) for k in shards])
        self.teacher = Teacher(vectors[: len(faces)], np.ones(len(faces), dtype=bool))
        self.size = len(faces)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> np.ndarray:
        """One face's variants (2, C, H, W), still on disk until read."""
        return self.shards[index // SHARD][index % SHARD]

    def cover(self, index: int) -> np.ndarray:
        """(H, W) float32: the share of each cell of the masked variant's map under the mask."""
        return self.covers[index // SHARD][index % SHARD].astype(np.float32)


def build(
    model: CQAFace, faces: FolderDataset, folder: Path, key: CacheKey, log: bool = True
) -> MapCache:
    """Computes the missing shards of `faces` through `model`'s stem and its own global head;
    returns the cache opened. A shard covers SHARD consecutive faces of the full list, so a
    prefix of the identities reuses exactly the shards a larger build wrote."""
    _check(folder, key, _names(faces))
    model.eval()
    t0, done = time.monotonic(), 0
    for k in range(-(-len(faces) // SHARD)):
        maps_file, teacher_file = _shard_files(folder, k)
        rows = _rows(k, len(faces))
        cover_file = _cover_file(folder, k)
        if not cover_file.is_file() or len(np.load(cover_file, mmap_mode="r")) < len(rows):
            size = model.stem.sizes[-1]
            _save_atomically(cover_file, _mask_cover(rows, key.seed, size))
        if _covers(folder, k, rows):
            continue
        maps, vectors = _variants(model, faces, rows, key.seed)
        _save_atomically(maps_file, maps)
        _save_atomically(teacher_file, vectors)  # last: its presence marks the shard complete
        done += len(rows)
        if log:
            rate = done / (time.monotonic() - t0)
            print(f"map cache: {rows.stop}/{len(faces)} faces, {rate:.1f} faces/s", flush=True)
    return MapCache(folder, faces, key)


def _save_atomically(path: Path, array: np.ndarray) -> None:
    partial = path.with_suffix(".partial.npy")
    np.save(partial, array)
    partial.replace(path)


@torch.inference_mode()
def _variants(
    model: CQAFace, faces: FolderDataset, rows: range, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    maps, vectors = [], []
    for start in range(rows.start, rows.stop, PASS):
        part = range(start, min(start + PASS, rows.stop))
        rngs = [np.random.default_rng([seed, i]) for i in part]
        crops = [faces.crop(i) for i in part]
        masked = [apply_mask(crop, rng=rng).image for crop, rng in zip(crops, rngs, strict=True)]
        mirror = [rng.random() < 0.5 for rng in rngs]
        pairs = zip(crops + masked, mirror * 2, strict=True)
        x = torch.from_numpy(preprocess(np.stack([_mirrored(c, m) for c, m in pairs])))
        bare, hidden = model.stem.forward_to(x, len(model.stem.stages) - 1).split(len(part))
        vectors.append(F.normalize(model.head(bare), dim=1).numpy())
        maps.append(torch.stack([bare, hidden], dim=1).half().numpy())
    return np.concatenate(maps), np.concatenate(vectors)


def _mask_cover(rows: range, seed: int, size: int) -> np.ndarray:
    """(len(rows), size, size) fp16: where `_variants` draws each face's mask, as the share of
    every map cell it covers, mirrored as the maps are. The mask and the mirroring depend only
    on the face's generator, not on its pixels, so this needs no stem and no crop."""
    blank = np.zeros((112, 112, 3), np.uint8)
    covers = []
    for i in rows:
        rng = np.random.default_rng([seed, i])
        coverage = apply_mask(blank, rng=rng).coverage
        covers.append(cell_cover(_mirrored(coverage, rng.random() < 0.5), size))
    return np.stack(covers).astype(np.float16)


def _mirrored(crop: np.ndarray, mirror: bool) -> np.ndarray:
    return np.ascontiguousarray(crop[:, ::-1]) if mirror else crop


class MapSet:
    """A map cache as a training set: each sample is one face's variants (read lazily) with
    the mask's cover of its masked variant."""

    def __init__(self, cache: MapCache, faces: FolderDataset) -> None:
        self.cache, self.labels = cache, faces.labels
        self.num_classes = faces.num_classes

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[tuple[np.ndarray, np.ndarray], int]:
        return (self.cache[index], self.cache.cover(index)), int(self.labels[index])


class PickVariant:
    """The augmentation of cached maps: the masked variant with probability `p_mask`, else the
    bare face; reads only the chosen map from disk. -> (map, occlusion): the mask's cover of
    each cell, zeros for the bare face."""

    def __init__(self, p_mask: float) -> None:
        if not 0 <= p_mask <= 1:
            raise ValueError(f"mask_maps={p_mask} must lie in [0, 1]")
        self.p_mask = p_mask

    def __call__(
        self, sample: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        variants, cover = sample
        masked = rng.random() < self.p_mask
        return np.asarray(variants[int(masked)]), cover if masked else np.zeros_like(cover)
