"""IResNet stems (insightface's layer structure): 112x112 in, 512x7x7 out of the last stage.

Blocks are pre-activation style: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, with a
conv1x1+BN shortcut where the shape changes. r100 = [3, 13, 30, 3] blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from embedder.stem import Stem

LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}
WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _layer(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        IBasicBlock(cin, cout, 2), *(IBasicBlock(cout, cout, 1) for _ in range(blocks - 1))
    )


class IResNet(Stem):
    def __init__(self, name: str) -> None:
        blocks = LAYERS[name]
        entry = nn.Sequential(conv3x3(3, 64), nn.BatchNorm2d(64, eps=BN_EPS), nn.PReLU(64))
        stages = [
            nn.Sequential(entry, _layer(64, WIDTHS[0], blocks[0])),
            _layer(WIDTHS[0], WIDTHS[1], blocks[1]),
            _layer(WIDTHS[1], WIDTHS[2], blocks[2]),
            # insightface applies a BN after the last stage before its flatten-FC head.
            nn.Sequential(_layer(WIDTHS[2], WIDTHS[3], blocks[3]), nn.BatchNorm2d(512, eps=BN_EPS)),
        ]
        super().__init__(stages, channels=WIDTHS, sizes=(56, 28, 14, 7))
        _init_weights(self)

    def global_head(self, embedding_size: int, dropout: float = 0.0) -> nn.Module:
        c, s = self.channels[-1], self.sizes[-1]
        return nn.Sequential(
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(c * s * s, embedding_size),
            nn.BatchNorm1d(embedding_size, eps=BN_EPS),
        )


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Zero the last BN of each residual branch: every block starts as the identity.
    for m in module.modules():
        if isinstance(m, IBasicBlock):
            nn.init.zeros_(m.bn3.weight)
