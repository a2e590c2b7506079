"""`cqaface detect | align | embed | export-onnx`: the embedder from the command line.

Handlers import the heavy modules themselves, so that `cqaface --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("detect", help="find faces in photos (JSON lines)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--crops", type=Path, help="also write each aligned 112x112 crop here")
    p.add_argument("--min-face-size", type=int, default=20)
    p.set_defaults(handler=detect)

    p = commands.add_parser("align", help="align a tree of photos into 112x112 crops")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--format", choices=["png", "jpg", "webp"], default="png")
    p.add_argument("--min-face-size", type=int, default=20)
    p.add_argument("--overwrite", action="store_true", help="redo crops that already exist")
    p.add_argument("--report", type=Path, help="JSON report (default: DST/align-report.json)")
    p.set_defaults(handler=align)

    p = commands.add_parser("embed", help="embed every face of each photo (JSON lines)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.add_argument("--largest", action="store_true", help="only the largest face per photo")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="skip the flip test")
    p.add_argument("--summary", action="store_true", help="human-readable lines, no vectors")
    p.set_defaults(handler=embed)

    p = commands.add_parser("export-onnx", help="export a checkpoint to ONNX")
    p.add_argument("output", type=Path)
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.set_defaults(handler=export_onnx)


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")


def _error_record(path: Path, error: Exception) -> dict[str, Any]:
    code = getattr(error, "code", "unreadable_file")
    return {"path": str(path), "error": {"code": code, "message": str(error)}}


def _face_record(path: Path, index: int, face: Any) -> dict[str, Any]:
    return {
        "path": str(path),
        "face": index,
        "box": [round(float(v), 2) for v in face.box],
        "score": round(float(face.score), 5),
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
    }


def _faces_per_image(paths: list[Path], policy: str, min_face_size: int = 20):
    """Yields (path, faces or the error that stopped that photo)."""
    from embedder import runtime
    from embedder.errors import FaceInputError
    from embedder.faces import faces_from_file

    detector = runtime.load_detector(min_face_size)  # CQAFACE_DETECTOR, CQAFACE_DETECT_PIXELS
    for path in paths:
        try:
            yield path, faces_from_file(path, detector=detector, policy=policy)
        except (FaceInputError, OSError) as error:
            yield path, error


def detect(args: argparse.Namespace) -> int:
    from PIL import Image

    failed = 0
    for path, faces in _faces_per_image(args.images, "all", args.min_face_size):
        if isinstance(faces, Exception):
            failed += 1
            _emit(_error_record(path, faces))
            continue
        for i, face in enumerate(faces):
            record = _face_record(path, i, face)
            if args.crops:
                args.crops.mkdir(parents=True, exist_ok=True)
                crop_path = args.crops / f"{path.stem}_{i}.png"
                Image.fromarray(face.crop).save(crop_path)
                record["crop"] = str(crop_path)
            _emit(record)
    return 1 if failed else 0


def align(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from embedder.align_tree import align_tree, photos_under

    total = sum(1 for _ in photos_under(args.src)) if args.src.is_dir() else 0
    with tqdm(total=total, unit="photo", disable=None) as bar:
        report = align_tree(
            args.src,
            args.dst,
            workers=args.workers,
            suffix=f".{args.format}",
            min_face_size=args.min_face_size,
            overwrite=args.overwrite,
            progress=bar.update,
        )
    report_path = args.report or args.dst / "align-report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.__dict__, indent=2) + "\n")
    print(
        f"{report.aligned} aligned, {report.skipped} already there, "
        f"{len(report.failures)} failed of {report.total} in {report.seconds:.1f} s; "
        f"report: {report_path}",
        file=sys.stderr,
    )
    return 1 if report.failures else 0


def embed(args: argparse.Namespace) -> int:
    from embedder.inference import Embedder
    from embedder.quality import box_size, face_quality

    embedder = Embedder.load(args.model, flip=args.flip)
    failed = 0
    policy = "largest" if args.largest else "all"
    first_faces: dict[str, Any] = {}
    for path, faces in _faces_per_image(args.images, policy):
        if isinstance(faces, Exception):
            failed += 1
            _emit(_error_record(path, faces))
            continue
        result = embedder.embed([face.crop for face in faces])
        agreement = [None] * len(faces) if result.agreement is None else result.agreement
        for i, face in enumerate(faces):
            record = _face_record(path, i, face)
            record["quality"] = [round(float(q), 4) for q in result.quality[i]]
            record["face_quality"] = face_quality(
                embedder.quality_fit,
                result.quality[i],
                agreement[i],
                face.score,
                box_size(face.box),
                face.crop,
            )
            record["model_version"] = embedder.version
            if args.summary:
                print(_summary(record, result.vectors[i]))
            else:
                record["embedding"] = [round(float(v), 6) for v in result.vectors[i]]
                _emit(record)
        first_faces[str(path)] = result.vectors[0]
    if args.summary and len(first_faces) > 1:
        _print_similarities(first_faces)
    return 1 if failed else 0


def _print_similarities(vectors: dict[str, Any]) -> None:
    """Cosine similarity of the first face of every pair of photos: what a match looks like."""
    names = list(vectors)
    print("cosine similarity of the photos' first faces:")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            print(f"  {float(vectors[a] @ vectors[b]):+.3f}  {a}  vs  {b}")


def _summary(record: dict[str, Any], vector: Any) -> str:
    x1, y1, x2, y2 = record["box"]
    return (
        f"{record['path']} face {record['face']}: box ({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f}) "
        f"score {record['score']:.3f}; {len(vector)}-d embedding from {record['model_version']}, "
        f"first values {[round(float(v), 3) for v in vector[:4]]}; "
        f"part qualities {record['quality']}, face quality {record['face_quality']}"
    )


def export_onnx(args: argparse.Namespace) -> int:
    from embedder import checkpoint, settings
    from embedder.onnx_export import export

    source = checkpoint.load(args.model or settings.model_path())
    path = export(source, args.output)
    print(f"exported {source.version} to {path}", file=sys.stderr)
    return 0
