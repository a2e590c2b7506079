"""Embedder benchmark: detect+align photos/s, embeddings/s (the shipped model's architecture
beside the ones shipped before it), and the CQA head's training cost.

Prints the figures and writes them to a JSON file. Timings that are compared (CQA head vs
global head) are taken interleaved in one run, since this machine is shared and noisy: the
ratio of medians is what to quote, not either absolute time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect_rate import detect_align_rate

from embedder import checkpoint as ckpt
from embedder.config import variant
from embedder.inference import Embedder
from embedder.model import build_model
from trainer.config import shared_data

DATA = Path(shared_data())


def embeddings_per_second(stem: str, batch: int, seconds: float = 3.0) -> float:
    torch.manual_seed(0)
    embedder = Embedder.from_checkpoint(
        ckpt.from_model(build_model(variant("cqa", stem=stem)).eval()),
        device="cpu",
        flip=False,
        batch_size=batch,
    )
    crops = np.random.default_rng(0).integers(0, 255, (batch, 112, 112, 3), dtype=np.uint8)
    embedder.embed(crops)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embedder.embed(crops)
        done += batch
    return done / (time.perf_counter() - start)


def _rate(embedder: Embedder, crops: np.ndarray, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embedder.embed(crops)
        done += len(crops)
    return done / (time.perf_counter() - start)


# The architectures the project shipped, newest first; speed depends on the layers, not on the
# weights, so the older ones are built untrained (their files live only in git history).
SHIPPED = {
    "w600k_cqa_head (now)": variant("cqa_head", stem="mobilefacenet_w600k"),
    "y1_cqa_gdc (2026-12-04)": variant("cqa_gdc", stem="mobilefacenet_y1"),
    "y1_cqa_gap (2026-12-01)": variant("cqa", stem="mobilefacenet_y1"),
    "mobilefacenet_cqa (from scratch)": variant("cqa", stem="mobilefacenet"),
}


def shipped_side_by_side(batch: int, rounds: int, seconds: float = 1.0) -> dict[str, float]:
    """Embeddings/s of each shipped architecture (flip test on, as served), measured in
    interleaved rounds; the median of each, and each one's ratio to the first."""
    crops = np.random.default_rng(0).integers(0, 255, (batch, 112, 112, 3), dtype=np.uint8)
    embedders = {}
    for name, config in SHIPPED.items():
        torch.manual_seed(0)
        model = ckpt.from_model(build_model(config).eval())
        embedders[name] = Embedder.from_checkpoint(model, device="cpu", batch_size=batch)
        embedders[name].embed(crops)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(rounds):
        for name, embedder in embedders.items():
            rates[name].append(_rate(embedder, crops, seconds))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    first = next(iter(medians.values()))
    return {
        **{f"{name} faces/s": round(m, 1) for name, m in medians.items()},
        **{f"{name} / now": round(m / first, 3) for name, m in list(medians.items())[1:]},
    }


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out = model(x)
    loss = out.embedding.pow(2).mean() + (out.attention.mean() if out.attention.numel() else 0)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def head_cost_ratio(stem: str, batch: int, repeats: int) -> dict[str, float]:
    """Forward+backward seconds per step, CQA head vs global head, interleaved step by step."""
    torch.manual_seed(0)
    models = {name: build_model(variant(name, stem=stem)).train() for name in ("cqa", "global")}
    x = torch.randn(batch, 3, 112, 112)
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        _train_step(model, x)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(_train_step(model, x))
    cqa, glob = statistics.median(times["cqa"]), statistics.median(times["global"])
    return {"cqa_s": round(cqa, 4), "global_s": round(glob, 4), "ratio": round(cqa / glob, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("var/bench-embedder.json"))
    parser.add_argument("--photos", type=int, default=300, help="photos for detect+align")
    parser.add_argument("--repeats", type=int, default=7, help="train steps per head")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per model")
    args = parser.parse_args()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "command": "make bench-embedder",
    }
    photos = sorted((DATA / "celeba-photos").glob("*/*.jpg"))[: args.photos]
    if photos:
        results["detect_align"] = detect_align_rate(photos, processes=2)
        print("detect+align photos/s:", results["detect_align"], flush=True)
    threads = torch.get_num_threads()
    results["embeddings_per_s"] = {}
    for stem in ("mobilefacenet", "r50"):
        for batch in (1, 32):
            rate = round(embeddings_per_second(stem, batch), 1)
            results["embeddings_per_s"][f"{stem}_batch{batch}"] = rate
            print(f"embeddings/s {stem} batch {batch} ({threads} threads): {rate}", flush=True)
    results["shipped_side_by_side"] = {
        f"batch{batch}": shipped_side_by_side(batch, args.rounds) for batch in (1, 16)
    }
    print("shipped models, faces/s with flip test:", results["shipped_side_by_side"], flush=True)
    results["train_step_cqa_vs_global"] = {
        "r50_batch32": head_cost_ratio("r50", 32, args.repeats),
        "mobilefacenet_batch64": head_cost_ratio("mobilefacenet", 64, args.repeats),
    }
    print("forward+backward, CQA head / global head:", results["train_step_cqa_vs_global"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
