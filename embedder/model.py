"""CQA-Face: stem CNN -> b LANet branches -> QAN part qualities -> concat -> FC 512 -> BN.

The forward pass returns the embedding (not normalised: CosFace and inference normalise it),
the b attention maps and the b part qualities, so that training can apply CAL and the UI can
show why a face matched. A "global" head (the stem's own flatten-FC) is the ArcFace-style
reference; for it the maps and qualities are empty tensors, never None, so that every model
exports to ONNX with the same three outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from embedder.backbones import build_stem
from embedder.config import ModelConfig
from embedder.lanet import LANet, gdc_pool
from embedder.qan import QAN


class FaceOutput(NamedTuple):
    embedding: torch.Tensor  # (N, embedding_size)
    attention: torch.Tensor  # (N, b, h, w), values in [0, 1]; b = 0 for the global head
    quality: torch.Tensor  # (N, b), values in (0, 1); ones without QAN; b = 0 for global


class CQAFace(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = build_stem(config.stem)
        self.stage = self.stem.resolve_stage(
            -1 if config.head == "global" else config.attention_stage
        )
        channels = self.stem.channels[self.stage]
        if config.head == "global":
            self.head = self.stem.global_head(config.embedding_size, config.head_dropout)
            return
        dropout = config.attention_dropout if config.diversity == "dropout" else 0.0
        pool, part = None, channels
        if config.part_pooling == "gdc":
            pool = gdc_pool(channels, self.stem.sizes[self.stage])
        elif config.part_pooling == "head":
            pool, part = self.stem.part_pool()
        partition = config.attention_maps == "partition"
        self.lanet = LANet(channels, config.branches, config.reduction, dropout, pool, partition)
        self.qan = QAN(part, config.branches, config.reduction) if config.qan else None
        self.fc = nn.Linear(config.branches * part, config.embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(config.embedding_size)

    def forward(self, x: torch.Tensor) -> FaceOutput:
        return self.forward_head(self.stem.forward_to(x, self.stage))

    def forward_head(self, features: torch.Tensor) -> FaceOutput:
        """The head alone, on the stem's map (stage 1 trains it on cached maps)."""
        if self.config.head == "global":
            n = features.shape[0]
            h, w = features.shape[-2:]
            empty_maps = features.new_zeros((n, 0, h, w))
            return FaceOutput(self.head(features), empty_maps, features.new_zeros((n, 0)))
        maps, parts = self.lanet(features)
        if self.qan is None:
            quality = parts.new_ones(parts.shape[:2])
        else:
            quality = self.qan(parts)
            parts = parts * quality.unsqueeze(-1)
        embedding = self.bn(self.fc(parts.flatten(1)))
        return FaceOutput(embedding, maps, quality)


def build_model(config: ModelConfig) -> CQAFace:
    return CQAFace(config)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
