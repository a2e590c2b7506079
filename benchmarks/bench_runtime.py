"""PyTorch eager against ONNX Runtime on the CPU, side by side in one run: the shipped embedder
(flip test on, as served) at batch 1 and 16, and MTCNN's P-Net (every level of a real photo's
pyramid), R-Net and O-Net (the candidates of real photos), then the whole detector per photo.
Each pair is timed in interleaved rounds (the machine is shared; the ratio of medians is the
figure to quote), with the spread of the rounds.

Parity on real data, the bar ONNX Runtime must clear to serve: the minimum cosine between the
two runtimes' embeddings of aligned celeba-112 crops (>= 0.9999), and the detections of both
on the celeba photos (same faces per photo; largest box and landmark difference in pixels).

`--beside OTHER.pt` also times the shipped model and another checkpoint, both served by ONNX
Runtime, interleaved: what a change of model costs.

    .venv/bin/python benchmarks/bench_runtime.py --out var/bench-runtime.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedder import checkpoint as ckpt  # noqa: E402
from embedder import settings  # noqa: E402
from embedder.imageio import load_image  # noqa: E402
from embedder.inference import Embedder  # noqa: E402
from embedder.mtcnn import MTCNN, Networks, torch_networks  # noqa: E402
from embedder.mtcnn_onnx import onnx_networks  # noqa: E402
from embedder.onnx_export import OnnxEmbedder  # noqa: E402

DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
COSINE_BAR = 0.9999  # the bar for "equal output"


def rounds(
    calls: dict[str, Callable[[], object]],
    count: int,
    seconds: float,
    ratio: str = "onnx_over_torch",
) -> dict:
    """Calls/s of each of two callables, interleaved round by round: median, min and max per
    name, and the second's median over the first's (named ``ratio``)."""
    for call in calls.values():
        call()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(count):
        for name, call in calls.items():
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                call()
                done += 1
            rates[name].append(done / (time.perf_counter() - start))
    out = {
        name: {"median": statistics.median(r), "min": min(r), "max": max(r)}
        for name, r in rates.items()
    }
    first, second = (statistics.median(r) for r in rates.values())
    return {**out, ratio: second / first}


def _scaled(figures: dict, factor: float, unit: str) -> dict:
    """Calls/s turned into items/s (``factor`` items per call), rounded for the report."""
    return {
        name: (
            {f"{unit}_{k}": round(v * factor, 1) for k, v in stats.items()}
            if isinstance(stats, dict)
            else round(stats, 3)
        )
        for name, stats in figures.items()
    }


def embedder_speed(
    embedders: dict[str, object], crops: np.ndarray, args, ratio: str = "onnx_over_torch"
) -> dict:
    """Faces/s of two embedders (flip test on, as served) at batch 1 and 16, interleaved."""
    result = {}
    for batch in (1, 16):
        part = crops[:batch]
        calls = {name: lambda e=e, p=part: e.embed(p) for name, e in embedders.items()}
        result[f"batch{batch}"] = _scaled(
            rounds(calls, args.rounds, args.seconds, ratio), batch, "faces_per_s"
        )
        print(f"embedder batch {batch}: {result[f'batch{batch}']}", flush=True)
    return result


class Recorder:
    """Networks that keep every input they are given, to time the nets on real inputs."""

    def __init__(self, inner: Networks) -> None:
        self.inputs: dict[str, list[np.ndarray]] = {"pnet": [], "rnet": [], "onet": []}
        self.networks = Networks(
            *(self._keep(name, net) for name, net in zip(self.inputs, inner, strict=True))
        )

    def _keep(self, name: str, net: Callable) -> Callable:
        def run(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
            self.inputs[name].append(pixels.copy())
            return net(pixels)

        return run


def mtcnn_speed(torch_nets: Networks, onnx_nets: Networks, photos: list[np.ndarray], args) -> dict:
    """Each net on the inputs a real batch of photos gives it; then the whole cascade."""
    recorder = Recorder(torch_nets)
    MTCNN(networks=recorder.networks).detect_batch(photos)
    result = {
        "photos": len(photos),
        "pnet_levels": len(recorder.inputs["pnet"]),
        "pnet_level_sizes": [list(x.shape[1:3]) for x in recorder.inputs["pnet"][:3]] + ["..."],
        "rnet_candidates": sum(len(x) for x in recorder.inputs["rnet"]),
        "onet_candidates": sum(len(x) for x in recorder.inputs["onet"]),
    }
    for index, name in enumerate(("pnet", "rnet", "onet")):
        inputs = recorder.inputs[name]

        def run(nets: Networks, i: int = index, xs: list = inputs) -> None:
            for x in xs:
                nets[i](x)

        calls = {"torch": lambda r=run: r(torch_nets), "onnx": lambda r=run: r(onnx_nets)}
        unit = "photos_per_s"
        result[name] = _scaled(rounds(calls, args.rounds, args.seconds), len(photos), unit)
        print(f"{name}: {result[name]}", flush=True)
    detectors = {"torch": MTCNN(networks=torch_nets), "onnx": MTCNN(networks=onnx_nets)}
    calls = {n: lambda d=d: [d.detect(p) for p in photos] for n, d in detectors.items()}
    result["detect_one_by_one"] = _scaled(
        rounds(calls, args.rounds, args.seconds), len(photos), "photos_per_s"
    )
    print(f"whole detector: {result['detect_one_by_one']}", flush=True)
    return result


def embedding_parity(torch_emb: Embedder, onnx_emb: OnnxEmbedder, crops: np.ndarray) -> dict:
    a, b = torch_emb.embed(crops), onnx_emb.embed(crops)
    cosine = (a.vectors * b.vectors).sum(1)
    return {
        "crops": len(crops),
        "min_cosine": float(cosine.min()),
        "max_quality_difference": float(np.abs(a.quality - b.quality).max()),
        "meets_bar": bool(cosine.min() >= COSINE_BAR),
    }


def detection_parity(torch_nets: Networks, onnx_nets: Networks, paths: list[Path]) -> dict:
    """Both detectors on every photo: faces found, and how far apart the matched faces lie."""
    detectors = (MTCNN(networks=torch_nets), MTCNN(networks=onnx_nets))
    found, differ, box, marks, score = [0, 0], 0, 0.0, 0.0, 0.0
    for path in paths:
        image = load_image(path)
        a, b = (detector.detect(image) for detector in detectors)
        found[0] += bool(a)
        found[1] += bool(b)
        if len(a) != len(b):
            differ += 1
            continue
        for x, y in zip(a, b, strict=True):
            box = max(box, float(np.abs(np.subtract(x.box, y.box)).max()))
            marks = max(marks, float(np.abs(x.landmarks - y.landmarks).max()))
            score = max(score, abs(x.score - y.score))
    return {
        "photos": len(paths),
        "photos_with_a_face": {"torch": found[0], "onnx": found[1]},
        "photos_with_a_different_face_count": differ,
        "max_box_difference_px": box,
        "max_landmark_difference_px": marks,
        "max_score_difference": score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-runtime.json")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--crops", type=int, default=256, help="celeba-112 crops for parity")
    parser.add_argument("--photos", type=int, default=0, help="celeba photos for parity (0: all)")
    parser.add_argument(
        "--beside", type=Path, help="another checkpoint: both served by ONNX Runtime, interleaved"
    )
    args = parser.parse_args()
    threads = settings.threads() or torch.get_num_threads()
    torch.set_num_threads(threads)
    checkpoint = ckpt.load(settings.model_path())
    torch_emb = Embedder.from_checkpoint(checkpoint, device="cpu", threads=threads)
    onnx_emb = OnnxEmbedder.from_checkpoint(checkpoint, threads=threads)
    crop_paths = sorted((DATA / "celeba-112").glob("*/*.webp"))[: args.crops]
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in crop_paths])
    photo_paths = sorted((DATA / "celeba-photos").glob("*/*.jpg"))
    torch_nets, onnx_nets = torch_networks("cpu"), onnx_networks(threads)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {threads} threads",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "model": checkpoint.version,
        "command": "make bench-runtime",
        "embedder": embedder_speed({"torch": torch_emb, "onnx": onnx_emb}, crops, args),
        "mtcnn": mtcnn_speed(
            torch_nets, onnx_nets, [load_image(p) for p in photo_paths[::150][:16]], args
        ),
        "parity_embedding": embedding_parity(torch_emb, onnx_emb, crops),
    }
    print("embedding parity:", results["parity_embedding"], flush=True)
    if args.beside:
        other = ckpt.load(args.beside)
        pair = {
            checkpoint.version: onnx_emb,
            other.version: OnnxEmbedder.from_checkpoint(other, threads=threads),
        }
        results["onnx_beside"] = embedder_speed(pair, crops, args, ratio="beside_over_shipped")
    chosen = photo_paths[: args.photos] if args.photos else photo_paths
    results["parity_detection"] = detection_parity(torch_nets, onnx_nets, chosen)
    print("detection parity:", results["parity_detection"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
