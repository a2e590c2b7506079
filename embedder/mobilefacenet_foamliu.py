"""foamliu's MobileFaceNet (MS1M): MobileNetV2 inverted residuals with ReLU6, as a stem.

The layout is the one its weights were trained in (foamliu/MobileFaceNet, read off its ONNX
export), so that embedder/pretrained.py can load them: the same depths and widths as insightface's
y1, but ReLU6 instead of PReLU, plain ReLU in the separable conv after the first layer (which,
unlike y1's, has a pointwise half), and PyTorch's batch-norm eps 1e-5 everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from embedder.stem import InputNorm, Stem

Activation = type[nn.ReLU] | type[nn.ReLU6] | None


class ConvBN(nn.Sequential):
    """conv (no bias) -> BN [-> activation]: parameters at `.0` and `.1`, as in foamliu's file."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 1,
        s: int = 1,
        groups: int = 1,
        act: Activation = nn.ReLU6,
        padding: int | None = None,
    ) -> None:
        p = k // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> project (1x1, linear); the residual
    whenever the block keeps its shape (MobileNetV2's rule)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            ConvBN(cin, hidden),
            ConvBN(hidden, hidden, 3, stride, groups=hidden),
            ConvBN(hidden, cout, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def _blocks(cin: int, cout: int, expansion: int, repeats: int) -> list[nn.Module]:
    """One stride-2 block expanding `expansion` times, then `repeats` residual ones (x2)."""
    first = InvertedResidual(cin, cout, 2, expansion)
    return [first, *(InvertedResidual(cout, cout, 1, 2) for _ in range(repeats))]


class FoamliuMobileFaceNet(Stem):
    """112 -> 56 -> 28 (64 ch) -> 14 (128) -> 7 (512): conv2's map is the last stage's output."""

    def __init__(self) -> None:
        stages = [
            nn.Sequential(
                ConvBN(3, 64, 3, 2),
                ConvBN(64, 64, 3, 1, groups=64, act=nn.ReLU),  # depthwise-separable,
                ConvBN(64, 64, act=nn.ReLU),  # with plain ReLU
                *_blocks(64, 64, 2, 4),
            ),
            nn.Sequential(*_blocks(64, 128, 4, 6)),
            nn.Sequential(*_blocks(128, 128, 4, 2), ConvBN(128, 512)),
        ]
        super().__init__(
            stages,
            channels=(64, 128, 512),
            sizes=(28, 14, 7),
            input_norm=InputNorm.imagenet(),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def global_head(self, embedding_size: int, dropout: float = 0.0) -> nn.Module:
        """GDConv (7x7 depthwise, linear) -> 1x1 conv as a linear layer -> BN: foamliu's head.

        Its 1x1 conv has a bias; the loader folds it into the last BN, so the layer names match
        MobileFaceNet's head (and y1's)."""
        c, s = self.channels[-1], self.sizes[-1]
        return nn.Sequential(
            ConvBN(c, c, s, groups=c, act=None, padding=0),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
