"""CosFace (large margin cosine loss): logits s * (cos(theta) - m * onehot) over class weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosFace(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__()
        self.s = s
        self.m = m
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        if labels is not None:
            cosine = cosine - self.m * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        return self.s * cosine

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # The cosine is computed in float32 even under autocast: s=64 amplifies rounding.
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.cross_entropy(self.logits(embeddings.float(), labels), labels)
