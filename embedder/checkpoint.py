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
    # Store weight matrices (conv and linear weights) as fp16 in the file, half its size; they
    # are read back as fp32, and a file that stored them so is saved so again.
    half_weights: bool = False

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
        "state_dict": _stored(checkpoint.state_dict, checkpoint.half_weights),
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
    stored = payload["state_dict"]
    return Checkpoint(
        ModelConfig.from_dict(payload["model_config"]),
        {k: v.float() if v.is_floating_point() else v for k, v in stored.items()},
        payload["model_version"],
        payload.get("metadata", {}),
        half_weights=any(v.dtype == torch.float16 for v in stored.values()),
    )


def with_half_weights(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint with its weight matrices rounded to fp16 (a new version: other weights),
    saved at half the size; biases, batch-norm statistics and PReLU slopes stay fp32."""
    state = {k: v.half().float() if _matrix(v) else v for k, v in checkpoint.state_dict.items()}
    version = model_version(checkpoint.config, state)
    return Checkpoint(checkpoint.config, state, version, dict(checkpoint.metadata), True)


def _stored(state: dict[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    if not half:
        return state
    return {k: v.half() if _matrix(v) else v for k, v in state.items()}


def _matrix(tensor: torch.Tensor) -> bool:
    """A conv or linear weight: what half weights store in fp16."""
    return tensor.is_floating_point() and tensor.dim() >= 2
