"""insightface's MobileFaceNet "MBF" (WebFace600K), as a stem: twice y1's width.

The layout is the one its published ONNX file was exported in (`w600k_mbf.onnx`, read by
embedder/pretrained.py): batch norm folded into every convolution's bias, so the convs carry
biases and there is no BatchNorm2d in the stem. Widths 128 -> 256 -> 512 at 28, 14 and 7;
the 512x7x7 map is the last stage's output. Its head has no 7x7 depthwise pooling: a 1x1 conv
to 64 channels, flatten (3,136), a linear layer to 512, batch norm.

Its input is the pipeline's own, (x - 127.5) / 127.5 on RGB (embedder/inference.py), the
scaling insightface trained it with: the stem needs no InputNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from embedder.stem import Stem


class ConvAct(nn.Sequential):
    """conv (with the folded batch norm's bias) [-> PReLU]."""

    def __init__(
        self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups)]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); a residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, hidden: int) -> None:
        super().__init__()
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            ConvAct(cin, hidden),
            ConvAct(hidden, hidden, 3, stride, groups=hidden),
            ConvAct(hidden, cout, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def _stage(cin: int, cout: int, hidden: int, residuals: int, residual_hidden: int) -> list:
    """One stride-2 bottleneck, then `residuals` residual ones."""
    return [
        Bottleneck(cin, cout, 2, hidden),
        *(Bottleneck(cout, cout, 1, residual_hidden) for _ in range(residuals)),
    ]


class W600KMobileFaceNet(Stem):
    """112 -> 56 -> 28 (128 ch) -> 14 (256) -> 7 (512)."""

    def __init__(self) -> None:
        stages = [
            nn.Sequential(
                ConvAct(3, 128, 3, 2),
                ConvAct(128, 128, 3, 1, groups=64),  # grouped, 2 channels a group
                *_stage(128, 128, 128, 4, 128),
            ),
            nn.Sequential(*_stage(128, 256, 256, 6, 256)),
            nn.Sequential(*_stage(256, 256, 512, 2, 256), ConvAct(256, 512)),
        ]
        super().__init__(stages, channels=(128, 256, 512), sizes=(28, 14, 7))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def part_pool(self) -> tuple[nn.Module, int]:
        """The head's 1x1 conv to 64 + PReLU and flatten: each part keeps where on the face
        its features sit, as the head's linear layer expects them."""
        s = self.sizes[-1]
        return nn.Sequential(ConvAct(self.channels[-1], 64), nn.Flatten()), 64 * s * s

    def global_head(self, embedding_size: int, dropout: float = 0.0) -> nn.Module:
        """1x1 conv to 64 + PReLU, flatten, linear, BN: the network's own head. The linear
        layer's bias is folded into the batch norm's mean by the loader, as for y1."""
        s = self.sizes[-1]
        return nn.Sequential(
            ConvAct(self.channels[-1], 64),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * s * s, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
