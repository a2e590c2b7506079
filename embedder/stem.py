"""The contract every stem CNN keeps, so that heads can read any stage of any stem."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Stem(nn.Module):
    """A CNN as an ordered list of stages; `channels[i]` x `sizes[i]`^2 is stage i's output."""

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int], sizes: Sequence[int]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(channels)
        self.sizes = tuple(sizes)

    def resolve_stage(self, stage: int) -> int:
        """0-based index of a 1-based stage number (-1 = last)."""
        n = len(self.stages)
        index = n - 1 if stage == -1 else stage - 1
        if not 0 <= index < n:
            raise ValueError(f"stage {stage} out of range: this stem has stages 1..{n}")
        return index

    def forward_to(self, x: torch.Tensor, stage_index: int) -> torch.Tensor:
        """Feature map after stage `stage_index` (0-based); later stages are not run."""
        for stage in self.stages[: stage_index + 1]:
            x = stage(x)
        return x

    def global_head(self, embedding_size: int, dropout: float = 0.0) -> nn.Module:
        """The stem's usual head over its last stage (the ArcFace-style reference)."""
        raise NotImplementedError


def build_stem(name: str) -> Stem:
    from embedder.iresnet import LAYERS, IResNet
    from embedder.mobilefacenet import MobileFaceNet

    if name in LAYERS:
        return IResNet(name)
    if name == "mobilefacenet":
        return MobileFaceNet()
    raise ValueError(f"unknown stem {name!r}")
