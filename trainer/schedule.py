"""Per-iteration learning rate: linear warm-up, then step drops (the paper) or a cosine decay.

The paper's recipes are step schedules given in epochs: divide by 10 at listed epochs, then
pin the rate to a small final value at a last epoch. Steps are counted globally (all epochs),
so the schedule is a pure function of the step and resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Schedule:
    base_lr: float
    steps_per_epoch: int
    epochs: float
    warmup_epochs: float = 0.0
    kind: Literal["step", "cosine"] = "step"
    milestones: tuple[float, ...] = ()  # epochs at which the rate is divided by `gamma`
    gamma: float = 0.1
    final_lr: float | None = None  # the rate from `final_epoch` on (the paper's 1e-4)
    final_epoch: float | None = None

    @property
    def total_steps(self) -> int:
        return max(1, round(self.epochs * self.steps_per_epoch))

    def lr(self, step: int) -> float:
        """The learning rate for optimiser step `step` (0-based)."""
        epoch = step / self.steps_per_epoch
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if step < warmup_steps:
            return self.base_lr * (step + 1) / warmup_steps
        if self.final_epoch is not None and self.final_lr is not None and epoch >= self.final_epoch:
            return self.final_lr
        if self.kind == "cosine":
            span = max(self.total_steps - warmup_steps, 1)
            progress = min((step - warmup_steps) / span, 1.0)
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * progress))
        drops = sum(epoch >= m for m in self.milestones)
        return self.base_lr * self.gamma**drops
