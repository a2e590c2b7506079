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
STAGE_PARTS = ("model", "head", "distill")  # what a later stage takes from an earlier one


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


def load_stage(run: Path, *modules: torch.nn.Module | None) -> int:
    """Starts model, CosFace head and distillation projection (in the order a checkpoint names
    them) from an earlier stage's newest checkpoint in `run`; returns its step. A run without
    checkpoints or of another shape fails naming the file and the first tensor that differs."""
    found = checkpoints(run / "checkpoints")
    if not found:
        raise ValueError(f"{run}: no training checkpoint to start from (checkpoints/step-*.pt)")
    path = found[-1]
    saved = _read(path)
    for key, module in zip(STAGE_PARTS, modules, strict=True):
        if module is None:
            continue
        if saved.get(key) is None:
            raise ValueError(f"{path}: holds no {key!r} to start from")
        own = module.state_dict()
        for name, value in saved[key].items():
            if name not in own or own[name].shape != value.shape:
                shape = tuple(own[name].shape) if name in own else "no such tensor"
                raise ValueError(
                    f"{path}: {key}.{name} has shape {tuple(value.shape)} there, {shape} here"
                )
        module.load_state_dict(saved[key])
    return saved["step"]


def latest(folder: Path) -> dict[str, Any] | None:
    found = checkpoints(folder)
    return _read(found[-1]) if found else None


def _read(path: Path) -> dict[str, Any]:
    # Our own files, holding numpy RNG state and Python tuples: not loadable weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)
