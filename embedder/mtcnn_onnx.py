"""MTCNN's three nets under ONNX Runtime: exported once from the same weights, then cached.

Each graph takes the cascade's NHWC float32 batch as it is (the layout change happens inside
the graph, so no copy is made before the call) and returns what the PyTorch net returns. P-Net
is exported with dynamic height and width (one graph for every pyramid level); R-Net and O-Net
with a dynamic batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedder import onnx_cache
from embedder.mtcnn import MTCNN, Networks, load_nets, weights_dir
from embedder.onnx_export import GRAPH_REVISION, session, split_prelu

# name -> (input side, output names); None: any height and width (P-Net).
NETS = {
    "pnet": (None, ("prob", "reg")),
    "rnet": (24, ("prob", "reg")),
    "onet": (48, ("prob", "reg", "landmarks")),
}
OPSET = 17


class _FromNHWC(nn.Module):
    """A net that reads the cascade's NHWC batch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net(x.permute(0, 3, 1, 2))


def export_net(net: nn.Module, name: str, path: Path) -> None:
    """One net to ONNX with the dynamic axes it needs."""
    side, outputs = NETS[name]
    dynamic = {0: "batch"} if side else {0: "batch", 1: "height", 2: "width"}
    dummy = torch.zeros(2, side or 40, side or 50, 3)
    torch.onnx.export(
        _FromNHWC(split_prelu(net)).eval(),
        (dummy,),
        str(path),
        input_names=["pixels"],
        output_names=list(outputs),
        dynamic_axes={"pixels": dynamic, **{out: {0: "batch"} for out in outputs}},
        opset_version=OPSET,
        dynamo=False,
    )


class OrtNet:
    """One exported net run by ONNX Runtime: NHWC numpy in, numpy out."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.session = session(path, threads)
        self._input = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(None, {self._input: np.ascontiguousarray(pixels)}))


def weights_key(folder: Path) -> str:
    """The three weight files' content hash: a new file means a new export."""
    digest = hashlib.sha256()
    for name in NETS:
        digest.update((folder / f"{name}.pt").read_bytes())
    return digest.hexdigest()[:16]


def onnx_networks(threads: int | None = None) -> Networks:
    """The three nets under ONNX Runtime, exported to the cache on first use."""
    folder = weights_dir()
    key = f"{weights_key(folder)}-g{GRAPH_REVISION}"
    nets = dict(zip(NETS, load_nets(folder), strict=True))
    paths = {
        name: onnx_cache.cached(
            f"mtcnn-{name}", key, lambda out, n=name: export_net(nets[n], n, out)
        )
        for name in NETS
    }
    return Networks(*(OrtNet(paths[name], threads) for name in NETS))


def onnx_mtcnn(min_face_size: float = 20, threads: int | None = None) -> MTCNN:
    """The reference cascade with its nets under ONNX Runtime."""
    return MTCNN(min_face_size=min_face_size, networks=onnx_networks(threads))
