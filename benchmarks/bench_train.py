"""Training throughput: samples/s of one real optimiser step (forward, CosFace + CAL, backward,
SGD) for the compact and r50 stems, full CQA head vs global head, and the per-step cost of CAL
and of QAN as ratios.

All variants of one stem step in turn, interleaved, on the same batch, so the machine's noise
hits them alike: quote the ratios of median step times, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from embedder.config import variant
from embedder.cosface import CosFace
from embedder.model import build_model
from trainer.train import Trainee

CLASSES = 8733  # celeba-112's training identities
# name -> the model: the paper's full head, its reference, and the full head less one part.
VARIANTS = {
    "global": {"name": "global"},
    "cqa": {"name": "cqa"},
    "cqa_without_cal": {"name": "cqa", "diversity": "none"},
    "cqa_without_qan": {"name": "cqa", "qan": False},
}


def trainee(stem: str, spec: dict) -> tuple[Trainee, torch.optim.Optimizer]:
    torch.manual_seed(0)
    spec = dict(spec)
    model = build_model(variant(spec.pop("name"), stem=stem, **spec))
    module = Trainee(model, CosFace(model.config.embedding_size, CLASSES), 0.5).train()
    module = module.to(memory_format=torch.channels_last)
    return module, torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)


def step(module: Trainee, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    start = time.perf_counter()
    loss = module(x, y)[0]
    loss.backward()
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def bench_stem(stem: str, batch: int, repeats: int) -> dict:
    x = torch.randn(batch, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch,))
    runs = {name: trainee(stem, spec) for name, spec in VARIANTS.items()}
    for module, optimiser in runs.values():
        step(module, optimiser, x, y)  # warm-up: allocations, oneDNN kernel choice
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (module, optimiser) in runs.items():
            times[name].append(step(module, optimiser, x, y))
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "batch": batch,
        "samples_per_s": {name: round(batch / t, 1) for name, t in median.items()},
        "cqa_over_global_samples_per_s": round(median["global"] / median["cqa"], 3),
        "cal_step_cost": round(median["cqa"] / median["cqa_without_cal"], 3),
        "qan_step_cost": round(median["cqa"] / median["cqa_without_qan"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("var/bench-train.json"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": "make bench-train",
    }
    for stem, batch in (("mobilefacenet", 64), ("r50", 16)):
        results[stem] = bench_stem(stem, batch, args.repeats)
        print(stem, json.dumps(results[stem]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
