"""The contract every stem CNN keeps, so that heads can read any stage of any stem."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class InputNorm(nn.Module):
    """A fixed per-channel affine map from the pipeline's input scaling ((x - 127.5) / 127.5,
    one preprocessing path for every model) to the one a pretrained stem was trained with."""

    def __init__(self, scale: Sequence[float], shift: Sequence[float]) -> None:
        super().__init__()
        # Not persistent: the map belongs to the stem's code, not to its trained weights.
        self.register_buffer("scale", torch.tensor(scale).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def scaled(cls, factor: float) -> InputNorm:
        return cls([factor] * 3, [0.0] * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Stem(nn.Module):
    """A CNN as an ordered list of stages; `channels[i]` x `sizes[i]`^2 is stage i's output."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        channels: Sequence[int],
        sizes: Sequence[int],
        input_norm: InputNorm | None = None,
    ):
        super().__init__()
        self.input_norm = input_norm or nn.Identity()
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
        x = self.input_norm(x)
        for stage in self.stages[: stage_index + 1]:
            x = stage(x)
        return x

    def global_head(self, embedding_size: int, dropout: float = 0.0) -> nn.Module:
        """The stem's usual head over its last stage (the ArcFace-style reference)."""
        raise NotImplementedError

    def part_pool(self) -> tuple[nn.Module, int]:
        """Its head up to the flatten, as a CQA part's pooling, and the part's length."""
        raise ValueError(
            f"{type(self).__name__}'s head has no 1x1 reduction before a flatten for "
            "part_pooling='head' (use 'mean' or 'gdc')"
        )
