"""ONNX export with a dynamic batch, and an ONNX Runtime embedder with the same interface.

The exported graph takes the preprocessed float32 batch and returns the model's three outputs;
the flip test and normalisation stay in `EmbedderBase`, shared with the PyTorch path. The
checkpoint's version, config and serving metadata (thresholds, mask classifier) travel in the
ONNX metadata.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embedder import onnx_cache, settings
from embedder.checkpoint import Checkpoint
from embedder.config import ModelConfig
from embedder.inference import INPUT_SIZE, EmbedderBase

OUTPUTS = ("embedding", "attention", "quality")
OPSET = 18
# Bumped whenever the exported graph changes for the same weights, so that no cache serves an
# older graph: 2 = PReLU split into ops of the blocked layout (`split_prelu`).
GRAPH_REVISION = 2


class SplitPReLU(nn.Module):
    """PReLU as relu(x) - a * relu(-x), the sign flip and the slopes as 1x1 depthwise
    convolutions: the same numbers bit for bit (one side is always an exact zero, the other
    one product), in ops that ONNX Runtime's CPU provider runs in its blocked (NCHWc) layout.
    Its own PRelu kernel, and the layout changes it forced around every activation, took about
    65% of the embedder's time in ONNX Runtime's profiler; without them the embedder runs 1.6x
    (batch 1) to 2.0x (batch 16) PyTorch eager's speed (`make bench-runtime`). Activations of
    other ranks (after a linear layer) become max(x, 0) + a * min(x, 0), exact as well."""

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        weight = prelu.weight.detach().clone()
        self.channels = weight.numel()  # a constant of the graph, not read off the input
        self.register_buffer("weight", weight)
        self.register_buffer("flip", -torch.ones_like(weight).view(-1, 1, 1, 1))
        self.register_buffer("negated_slope", -weight.view(-1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self.channels == 1:
            slope = self.weight.view([1, -1] + [1] * (x.dim() - 2))  # per channel (dim 1)
            return torch.clamp(x, min=0) + slope * torch.clamp(x, max=0)
        negative = F.relu(F.conv2d(x, self.flip, groups=self.channels))
        return F.conv2d(negative, self.negated_slope, groups=self.channels) + F.relu(x)


def split_prelu(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for export, every :class:`nn.PReLU` replaced by :class:`SplitPReLU`
    (the original is untouched: it may go on training or serving under PyTorch)."""
    if isinstance(model, nn.PReLU):
        return SplitPReLU(model)
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.PReLU):
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, SplitPReLU(module))
    return model


def export(checkpoint: Checkpoint, path: str | Path, opset: int = OPSET) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = split_prelu(checkpoint.build())
    dummy = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["faces"],
        output_names=list(OUTPUTS),
        dynamic_shapes={"x": {0: batch}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = onnx.load(str(path))
    meta = {
        "model_version": checkpoint.version,
        "model_config": json.dumps(checkpoint.config.to_dict()),
        "serving_metadata": json.dumps(checkpoint.metadata),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session on ``path``: CUDA provider when available, CPU otherwise, with
    ``threads`` intra-op threads (default: CQAFACE_THREADS, else ONNX Runtime's own)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = threads or settings.threads()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graphs are chains: nothing to run side by side
    # Idle pool threads sleep instead of spinning: spinning ones take the core that the
    # detector's numpy work between two runs needs (with it, MTCNN ran at half speed).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    return ort.InferenceSession(str(path), options, providers=providers)


def cached_export(checkpoint: Checkpoint) -> Path:
    """The checkpoint's graph from the ONNX cache, exported there on first use; the key is the
    version (a digest of the weights) and the opset, so a new checkpoint is exported anew."""
    key = f"{checkpoint.version}-opset{OPSET}-g{GRAPH_REVISION}"
    return onnx_cache.cached("embedder", key, lambda path: export(checkpoint, path))


class OnnxEmbedder(EmbedderBase):
    """ONNX Runtime inference (CUDA provider when available, CPU otherwise)."""

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        flip: bool = True,
        batch_size: int = 64,
    ) -> None:
        super().__init__(flip=flip, batch_size=batch_size)
        self.session = session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.version = meta["model_version"]
        self.config = ModelConfig.from_dict(json.loads(meta["model_config"]))
        self.metadata: dict[str, Any] = json.loads(meta.get("serving_metadata", "{}"))
        self._input = self.session.get_inputs()[0].name

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, **kwargs: Any) -> OnnxEmbedder:
        """The checkpoint's graph with the checkpoint's own metadata: the cached graph is keyed
        by the weights only, so metadata written since its export (`cqaface eval calibrate
        --write`, `python -m trainer.quality_fit --write`) is read from the checkpoint."""
        embedder = cls(cached_export(checkpoint), **kwargs)
        embedder.metadata = dict(checkpoint.metadata)
        return embedder

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emb, att, qual = self.session.run(list(OUTPUTS), {self._input: np.ascontiguousarray(x)})
        return emb, att, qual
