"""ONNX export with a dynamic batch, and an ONNX Runtime embedder with the same interface.

The exported graph takes the preprocessed float32 batch and returns the model's three outputs;
the flip test and normalisation stay in `EmbedderBase`, shared with the PyTorch path. The
checkpoint's version, config and serving metadata (thresholds, mask classifier) travel in the
ONNX metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedder import onnx_cache, settings
from embedder.checkpoint import Checkpoint
from embedder.config import ModelConfig
from embedder.inference import INPUT_SIZE, EmbedderBase

OUTPUTS = ("embedding", "attention", "quality")
OPSET = 18


def export(checkpoint: Checkpoint, path: str | Path, opset: int = OPSET) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = checkpoint.build()
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
    key = f"{checkpoint.version}-opset{OPSET}"
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
        return cls(cached_export(checkpoint), **kwargs)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emb, att, qual = self.session.run(list(OUTPUTS), {self._input: np.ascontiguousarray(x)})
        return emb, att, qual
