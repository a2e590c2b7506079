"""Training configuration: plain dataclasses, written as Python files in trainer/configs/.

`cqaface train NAME_OR_FILE` loads a preset by name (trainer/configs/NAME.py) or any Python
file that defines `config = TrainConfig(...)`. Paths to data are resolved from
CQAFACE_SHARED_DATA so that no config hard-codes a machine's layout.
"""

from __future__ import annotations

import os
import runpy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from embedder.config import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data(*parts: str) -> str:
    """A path under the shared data folder (CQAFACE_SHARED_DATA, default ../shared/data)."""
    root = Path(os.environ.get("CQAFACE_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    return str(root.joinpath(*parts))


def shared_model(*parts: str) -> str:
    """A pretrained file under CQAFACE_SHARED_MODELS (default ../shared/models): training data,
    never part of the repository."""
    root = Path(os.environ.get("CQAFACE_SHARED_MODELS", PROJECT_ROOT.parent / "shared" / "models"))
    return str(root.joinpath(*parts))


def cache_dir(name: str) -> str:
    """A stem-map cache (trainer/map_cache.py): CQAFACE_CACHE_DIR, default var/maps."""
    root = Path(os.environ.get("CQAFACE_CACHE_DIR", PROJECT_ROOT / "var" / "maps"))
    return str(root / name)


@dataclass(frozen=True)
class DataConfig:
    root: str  # a folder per identity of aligned 112x112 crops, or an insightface .rec file
    # Split of a folder by identity: this many validation identities (0: train on all), every
    # identity of the `holdout` folder among them (people kept out of training for tests).
    validation_identities: int = 400
    holdout: str | None = None
    split_seed: int = 0
    val_pairs_per_fold: int | None = 300  # caps periodic validation's cost
    preload: bool = True  # decode every crop once into RAM (WebP decoding dominates on CPU)
    max_per_identity: int | None = None  # each identity's first N images only
    max_identities: int | None = None  # the first N training identities (sorted) only
    flip: float = 0.5
    color_jitter: float = 0.0
    low_resolution: float = 0.0  # probability of random down-and-up scaling (cross-quality)
    blur: float = 0.0
    mask: float = 0.0  # probability of a synthetic mask (off: the paper does not use them)
    # A teacher's embeddings of `root`'s crops (trainer/teacher.py), for distillation.
    teacher: str | None = None
    # Stage 1 on a pretrained stem: a folder of its cached maps (trainer/map_cache.py), built on
    # first use; the stem stays frozen, the head trains on the maps, the teacher is the
    # pretrained network's own embedding of the bare face.
    maps: str | None = None
    mask_maps: float = 0.5  # with `maps`: probability of the masked variant of a face
    # With `maps`: False trains the whole network on the crops (stage 2, with `mask` as
    # augmentation) and takes only the pretrained network's embeddings from the cache, as the
    # distillation target of each face.
    train_on_maps: bool = True


@dataclass(frozen=True)
class TrainConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    batch_size: int = 256  # global, over all processes
    # Each process's share of a global batch runs as this many forward/backward passes
    # whose gradients add up before one optimiser step: batch norm sees
    # batch_size / (world * micro_batches) faces per pass. Fits a large global batch into
    # memory, and lets one process compute exactly what that many processes compute.
    micro_batches: int = 1
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: float = 12
    warmup_epochs: float = 2
    schedule: Literal["step", "cosine"] = "step"
    milestones: tuple[float, ...] = (7, 10)
    final_lr: float | None = 1e-4
    final_epoch: float | None = 12
    cosface_s: float = 64.0
    cosface_m: float = 0.35
    attention_lambda: float = 0.5  # weight of CAL (or L_D) beside CosFace
    distill_weight: float = 0.0  # weight of embedding distillation (needs data.teacher or maps)
    # Weight of QAN's supervision by the synthetic mask's cover (trainer/occlusion.py): cached
    # maps only (stage 1); 0 for a head without QAN, as CAL is for a head without branches.
    occlusion_weight: float = 0.0
    # A pretrained network's file (embedder/pretrained.py) to start the stem from.
    init: str | None = None
    # The run folder of an earlier stage: the model, CosFace head and distillation projection
    # start from its newest checkpoint, so stage 2 continues where stage 1's losses ended.
    start: str | None = None
    # Keep the stem's batch-norm statistics at their pretrained values while its weights train:
    # a fine-tune on masked CelebA batches must not re-estimate what MS1M measured.
    freeze_stem_bn: bool = False
    grad_clip: float | None = 5.0
    amp: bool = True  # bf16 autocast on CUDA only; CPU trains in float32
    compile: bool = False  # torch.compile the model: ~1.2x on CPU after ~2 min of compiling
    seed: int = 0
    output: str = "runs"
    checkpoint_every: int = 500  # optimiser steps
    keep_checkpoints: int = 2
    log_every: int = 20
    val_every: int | None = 2000
    max_steps: int | None = None  # stop early (tests, benchmarks); the schedule is unchanged
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def load_config(name_or_path: str) -> TrainConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.py"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__"))
        raise ValueError(f"no training config {name_or_path!r}; presets: {presets}")
    config = runpy.run_path(str(path)).get("config")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path} must define `config = TrainConfig(...)`")
    return config
