"""Offline teacher embeddings for distillation: dlib's ResNet face descriptor (CC0 weights from
the `face-recognition-models` package) over every aligned crop of a folder tree.

Run once, outside the project's environment (dlib is never a runtime dependency):

    python -m venv /tmp/teacher && /tmp/teacher/bin/pip install dlib-bin face-recognition-models
    /tmp/teacher/bin/python trainer/teacher_dlib.py ROOT OUT.npz [--workers 2]

dlib expects its own 150x150 chip (5 landmarks from its shape predictor, padding 0.25). The
crops here are insightface-aligned 112x112, so each crop is upscaled, its dlib landmarks found
inside the whole crop, and the chip cut from it; the part of the chip outside the crop is black,
as it is for a face at a photo's border. OUT.npz holds `paths` (relative to ROOT) and
`embeddings` (float32, N x 128, unit length).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

UPSCALE = 2  # dlib's landmark model works on faces of ~80 px and up; 224 px is comfortable.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm"}
_models: tuple | None = None


def _load_models() -> tuple:
    global _models
    if _models is None:
        import dlib
        import face_recognition_models as frm

        _models = (
            dlib,
            dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
            dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
        )
    return _models


def describe(paths: list[str]) -> np.ndarray:
    """One unit 128-d descriptor per crop path."""
    dlib, predictor, encoder = _load_models()
    chips = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        size = image.width * UPSCALE
        pixels = np.asarray(image.resize((size, size), Image.BICUBIC))
        # The insightface template puts the face in the central ~70% of the crop.
        margin = size * 0.12
        rect = dlib.rectangle(int(margin), int(margin * 1.3), int(size - margin), int(size))
        shape = predictor(pixels, rect)
        chips.append(dlib.get_face_chip(pixels, shape, size=150, padding=0.25))
    vectors = np.array(encoder.compute_face_descriptor(chips), np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="only the first N crops (a check)")
    args = parser.parse_args(argv)
    files = sorted(
        p for p in args.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )[: args.limit]
    chunks = [[str(p) for p in files[i : i + args.chunk]] for i in range(0, len(files), args.chunk)]
    parts = []
    with ProcessPoolExecutor(args.workers) as pool:
        for done, part in enumerate(pool.map(describe, chunks), 1):
            parts.append(part)
            print(f"\r{min(done * args.chunk, len(files))}/{len(files)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    relative = np.array([str(p.relative_to(args.root)) for p in files])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, paths=relative, embeddings=np.concatenate(parts))


if __name__ == "__main__":
    main()
