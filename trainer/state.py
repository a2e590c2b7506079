"""Training checkpoints for an exact resume: weights, head, optimiser, position, RNG states.

The learning rate is a pure function of the step (trainer.schedule) and the sample order a
pure function of (seed, epoch) (trainer.sampler), so the step and the position are all the
schedule and the sampler need. Files are written atomically; the newest complete one wins.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

PATTERN = re.compile(r"step-(\d+)\.pt$")


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(folder: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({**payload, "step": step, "rng": rng_states()}, tmp)
    tmp.replace(path)
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in folder.glob("step-*.pt") if PATTERN.search(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def latest(folder: Path) -> dict[str, Any] | None:
    found = checkpoints(folder)
    if not found:
        return None
    # Our own files, holding numpy RNG state and Python tuples: not loadable weights-only.
    return torch.load(found[-1], map_location="cpu", weights_only=False)
