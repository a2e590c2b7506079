"""What detecting at a working size (CQAFACE_DETECT_PIXELS) changes, and what it saves.

1. celeba-photos as they are (every photo): the serving detector (MTCNN at the working size)
   against MTCNN on the photo itself: photos whose faces change. These photos are below the
   working size, so none should.
2. celeba-photos at phone size (every ``--step``-th photo placed in a 12 MP canvas,
   `large_photos.py`, JPEG): `faces_from_file` as `cqaface detect` runs it (DCT-reduced decode,
   detection at the working size, alignment from a decode large enough for the crop) against
   MTCNN on the original photo: faces lost, and how far the landmarks move, in the original
   photo's pixels and in inter-ocular distances.
3. Cost: `cqaface detect` and `cqaface identify` (``--commands``; identify against a gallery
   of the 8 original photos, embedded SQLite) on 8 photos of 1 MP and 8 of 12 MP, start-up
   included, wall time, CPU time and peak memory (max RSS), at the working size and with it off
   (CQAFACE_DETECT_PIXELS=10^9: full decode, detection on every pixel, the old path;
   ``--modes``), interleaved, ``--repeats`` times, with the load average before and after.

    .venv/bin/python benchmarks/detect_scale.py --out var/detect-scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.large_photos import SIZES, canvas, jpeg  # noqa: E402
from embedder import runtime  # noqa: E402
from embedder.errors import FaceInputError  # noqa: E402
from embedder.faces import faces_from_file  # noqa: E402
from embedder.imageio import load_image  # noqa: E402

DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
OFF = "1000000000"  # a working size no photo reaches: the old path


def photos() -> list[Path]:
    return sorted((DATA / "celeba-photos").glob("*/*.jpg"))


def unchanged_below_working_size(paths: list[Path]) -> dict:
    """Part 1: the serving detector against the bare cascade on the photos as they are."""
    serving = runtime.load_detector()
    bare = serving.detector
    changed = 0
    for path in paths:
        image = load_image(path)
        mine, theirs = serving.detect(image), bare.detect(image)
        same = len(mine) == len(theirs) and all(
            np.array_equal(a.landmarks, b.landmarks) for a, b in zip(mine, theirs, strict=True)
        )
        changed += not same
    return {"photos": len(paths), "photos_changed": changed}


def at_phone_size(paths: list[Path]) -> dict:
    """Part 2: the 12 MP canvases through the serving path, against the original photos."""
    serving = runtime.load_detector()
    bare = serving.detector
    lost, found, moves, ocular = 0, 0, [], []
    for path in paths:
        image = load_image(path)
        reference = bare.detect(image)
        if not reference:
            continue
        marks = max(reference, key=lambda d: d.area).landmarks
        pixels, scale, (left, top) = canvas(image, SIZES["12mp"])
        try:
            faces = faces_from_file(jpeg(pixels), detector=serving, policy="largest")
        except FaceInputError:
            lost += 1
            continue
        found += 1
        back = (faces[0].landmarks - np.array([left, top])) / scale  # original photo pixels
        move = np.linalg.norm(back - marks, axis=1)
        moves.append(float(move.mean()))
        ocular.append(float(move.mean() / np.linalg.norm(marks[1] - marks[0])))
    return {
        "photos": found + lost,
        "lost": lost,
        "landmark_move_px_median": statistics.median(moves),
        "landmark_move_px_p95": float(np.percentile(moves, 95)),
        "landmark_move_px_max": max(moves),
        "landmark_move_interocular_median": statistics.median(ocular),
        "landmark_move_interocular_max": max(ocular),
    }


def cost(paths: list[Path], repeats: int, commands: list[str], modes: list[str]) -> dict:
    """Part 3: each command in a fresh process per run, interleaved."""
    results: dict[str, list[tuple[float, float, float]]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        sets = {}
        for size in ("1mp", "12mp"):
            files = []
            for i, path in enumerate(paths[:8]):
                target = Path(folder) / f"{size}-{i}.jpg"
                target.write_bytes(jpeg(canvas(load_image(path), SIZES[size])[0]))
                files.append(str(target))
            sets[size] = files
        env = _gallery(Path(folder), paths[:8]) if "identify" in commands else {}
        for _ in range(repeats):
            for command in commands:
                for mode in modes:
                    for size, files in sets.items():
                        run = _run(command, files, OFF if mode == "off" else None, env)
                        results.setdefault(f"{command}-{mode}-{size}", []).append(run)
    summary: dict = {"load_average_before": load_before, "load_average_after": os.getloadavg()}
    for key, runs in results.items():
        summary[key] = {
            "seconds_median": statistics.median(r[0] for r in runs),
            "cpu_seconds_median": statistics.median(r[1] for r in runs),
            "peak_mb_median": statistics.median(r[2] for r in runs),
        }
    for command in commands:
        for mode in modes:
            small, big = summary[f"{command}-{mode}-1mp"], summary[f"{command}-{mode}-12mp"]
            summary[f"{command}-{mode}-ratio"] = {
                key: big[f"{key}_median"] / small[f"{key}_median"]
                for key in ("seconds", "cpu_seconds", "peak_mb")
            }
    return summary


def _gallery(folder: Path, paths: list[Path]) -> dict[str, str]:
    """An embedded gallery (SQLite, no broker) of ``paths``, one subject each: the
    environment that points `cqaface identify` at it."""
    env = {
        "CQAFACE_DATA_DIR": str(folder / "data"),
        "CQAFACE_DATABASE_URL": "",
        "CQAFACE_BROKER_URL": "",
        "CQAFACE_INDEX_DIR": "",
        "CQAFACE_MASKED_TEMPLATES": "0",
    }
    for path in paths:
        (folder / "gallery" / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / "gallery" / path.parent.name / path.name).write_bytes(path.read_bytes())
    for arguments in (["db", "upgrade"], ["enrol", str(folder / "gallery")]):
        subprocess.run(
            [sys.executable, "-m", "identify.cli", *arguments],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return env


def _run(
    command: str, files: list[str], pixels: str | None, extra: dict[str, str]
) -> tuple[float, float, float]:
    """Seconds, CPU seconds (user and system: what a busy machine's waiting does not
    inflate) and peak resident MB of one `cqaface <command>` over ``files``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    if pixels:
        env["CQAFACE_DETECT_PIXELS"] = pixels
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "identify.cli", command, *files],
        env=env,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"cqaface {command} failed with status {status}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--step", type=int, default=10, help="every n-th photo at 12 MP")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--commands", default="detect,identify", help="part 3's commands")
    parser.add_argument("--modes", default="working,off", help="part 3: working size, off")
    args = parser.parse_args()
    paths, parts, report = photos(), args.parts.split(","), {}
    if "1" in parts:
        report["celeba_as_is"] = unchanged_below_working_size(paths)
        print("celeba as is:", report["celeba_as_is"], flush=True)
    if "2" in parts:
        report["celeba_12mp"] = at_phone_size(paths[:: args.step])
        print("celeba at 12 MP:", report["celeba_12mp"], flush=True)
    if "3" in parts:
        commands, modes = args.commands.split(","), args.modes.split(",")
        report["cost"] = cost(paths[:: len(paths) // 8], args.repeats, commands, modes)
        print("cost:", json.dumps(report["cost"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
