"""Every stem by its name in a ModelConfig: the one module that knows all the backbones, so that
the contract (stem.py) and the backbones that keep it never import each other."""

from __future__ import annotations

from embedder.iresnet import LAYERS, IResNet
from embedder.mobilefacenet import MobileFaceNet, insightface_y1
from embedder.mobilefacenet_w600k import W600KMobileFaceNet
from embedder.stem import Stem


def build_stem(name: str) -> Stem:
    """The stem a ModelConfig names: an IResNet depth or one of the MobileFaceNets."""
    if name in LAYERS:
        return IResNet(name)
    if name == "mobilefacenet":
        return MobileFaceNet()
    if name == "mobilefacenet_y1":
        return insightface_y1()
    if name == "mobilefacenet_w600k":
        return W600KMobileFaceNet()
    raise ValueError(f"unknown stem {name!r}")
