"""Checkpoints that carry everything needed to serve: weights, config, version, calibration.

A checkpoint is a plain dict saved with torch.save and loaded with weights_only=True, so that
loading a file never runs code. The model version is derived from the weights' bytes: two
checkpoints with the same version produce the same embeddings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from embedder.config import ModelConfig
from embedder.model import CQAFace, build_model

FORMAT = "cqaface-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a CQA-Face checkpoint."""


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    version: str
    # Calibrated thresholds, mask classifier, training provenance: whatever serving needs.
    metadata: dict[str, Any] = field(default_factory=dict)

    def build(self) -> CQAFace:
        model = build_model(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_version(config: ModelConfig, state_dict: dict[str, torch.Tensor]) -> str:
    return f"cqaface-{config.stem}-{config.head}-{weights_digest(state_dict)[:12]}"


def from_model(model: CQAFace, metadata: dict[str, Any] | None = None) -> Checkpoint:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return Checkpoint(model.config, state, model_version(model.config, state), dict(metadata or {}))


def save(checkpoint: Checkpoint, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": checkpoint.config.to_dict(),
        "model_version": checkpoint.version,
        "state_dict": checkpoint.state_dict,
        "metadata": checkpoint.metadata,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no model checkpoint at {path}: set CQAFACE_MODEL or pass --model "
            "(a checkpoint written by `cqaface train`)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; name the file instead
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CQA-Face checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer cqa-face; upgrade to read it")
    return Checkpoint(
        ModelConfig.from_dict(payload["model_config"]),
        payload["state_dict"],
        payload["model_version"],
        payload.get("metadata", {}),
    )
