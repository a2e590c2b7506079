"""Start a model from a face network trained elsewhere (MS1M MobileFaceNets, ../shared/models).

Each reader maps a foreign file onto the project's own layer names: the stem always, and the
network's own pooled embedding onto a `global` head of the same width (the ArcFace-style
reference). The files are training data: a trained checkpoint carries every weight itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from embedder import mxnet_params
from embedder.config import ModelConfig
from embedder.model import CQAFace


class PretrainedError(ValueError):
    """A pretrained file is missing, of the wrong kind, or does not fit the model."""


# Each pretrained stem's own network: its pooled embedding as a `global` head of its width.
NATIVE: dict[str, ModelConfig] = {
    "mobilefacenet_y1": ModelConfig(
        stem="mobilefacenet_y1", head="global", embedding_size=128, qan=False, diversity="none"
    ),
}


def native(stem: str) -> ModelConfig:
    """The config of the network a pretrained stem comes from (its own embedding head)."""
    if stem not in NATIVE:
        raise PretrainedError(
            f"stem {stem!r} has no pretrained network; known: {', '.join(NATIVE)}"
        )
    return NATIVE[stem]


# insightface's MobileFaceNet "y1": its conv blocks in the order the project's layers come.
def _y1_blocks() -> Iterator[str]:
    yield from ("conv_1", "conv_2_dw")
    for group, blocks in (("23", 4), ("34", 6), ("45", 2)):
        stage = group[1]
        for block in (f"dconv_{group}", *(f"res_{stage}_block{i}" for i in range(blocks))):
            yield from (f"{block}_conv_sep", f"{block}_conv_dw", f"{block}_conv_proj")
    yield "conv_6sep"


def _conv_block(prefix: str, source: str, activation: bool) -> dict[str, str]:
    """project ConvBlock (conv, bn[, prelu]) -> MXNet names."""
    names = {
        f"{prefix}.0.weight": f"arg:{source}_conv2d_weight",
        f"{prefix}.1.weight": f"arg:{source}_batchnorm_gamma",
        f"{prefix}.1.bias": f"arg:{source}_batchnorm_beta",
        f"{prefix}.1.running_mean": f"aux:{source}_batchnorm_moving_mean",
        f"{prefix}.1.running_var": f"aux:{source}_batchnorm_moving_var",
    }
    if activation:
        names[f"{prefix}.2.weight"] = f"arg:{source}_relu_gamma"
    return names


def _conv_blocks(model: CQAFace) -> list[tuple[str, bool]]:
    """(name, has an activation) of the stem's ConvBlocks in module order (`_y1_blocks`'s)."""
    from embedder.mobilefacenet import ConvBlock

    return [
        (f"stem.{n}", len(m) == 3)
        for n, m in model.stem.named_modules()
        if isinstance(m, ConvBlock)
    ]


def _y1_mapping(model: CQAFace) -> dict[str, str]:
    blocks = _conv_blocks(model)
    sources = list(_y1_blocks())
    if len(blocks) != len(sources):
        raise PretrainedError(
            f"stem {model.config.stem!r} has {len(blocks)} conv blocks, y1 has {len(sources)}"
        )
    mapping: dict[str, str] = {}
    for (prefix, activation), source in zip(blocks, sources, strict=True):
        mapping.update(_conv_block(prefix, source, activation))
    return mapping


def _y1_head(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """y1's pooled embedding: GDC conv + BN, then fc1 (with a bias) + BN with gamma fixed at 1.

    The bias is folded into the last batch norm's mean (BN(Wx + b) = BN'(Wx), mean' = mean - b),
    so that the head keeps the project's bias-free linear layer.
    """

    def get(name: str) -> np.ndarray:
        return arrays[name]

    weight = get("arg:fc1_weight")
    return {
        "head.0.0.weight": get("arg:conv_6dw7_7_conv2d_weight"),
        "head.0.1.weight": get("arg:conv_6dw7_7_batchnorm_gamma"),
        "head.0.1.bias": get("arg:conv_6dw7_7_batchnorm_beta"),
        "head.0.1.running_mean": get("aux:conv_6dw7_7_batchnorm_moving_mean"),
        "head.0.1.running_var": get("aux:conv_6dw7_7_batchnorm_moving_var"),
        "head.3.weight": weight,
        "head.4.weight": np.ones(weight.shape[0], np.float32),
        "head.4.bias": get("arg:fc1_beta"),
        "head.4.running_mean": get("aux:fc1_moving_mean") - get("arg:pre_fc1_bias"),
        "head.4.running_var": get("aux:fc1_moving_var"),
    }


def y1_state(model: CQAFace, path: Path) -> dict[str, np.ndarray]:
    """The model's tensors that insightface's y1 `.params` file provides."""
    try:
        arrays = mxnet_params.load(path)
    except mxnet_params.ParamsFormatError as error:
        raise PretrainedError(str(error)) from None
    state: dict[str, np.ndarray] = {}
    for name, source in _y1_mapping(model).items():
        if source not in arrays:
            raise PretrainedError(f"{path}: no tensor {source!r} for {name} (not a y1 file?)")
        state[name] = arrays[source]
    if model.config.head == "global":
        try:
            state.update(_y1_head(arrays))
        except KeyError as missing:
            raise PretrainedError(f"{path}: no tensor {missing} for the global head") from None
    return state


READERS = {".params": y1_state}


def load_into(model: CQAFace, path: str | Path) -> list[str]:
    """Copies a pretrained file's weights into `model`; returns the names it set.

    Every tensor the file provides must fit exactly: the first that does not is named with the
    file, so that a wrong file or a wrong stem fails at once instead of training from noise.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such pretrained file")
    reader = READERS.get(path.suffix)
    if reader is None:
        known = ", ".join(sorted(READERS))
        raise PretrainedError(f"{path}: unknown pretrained format (known: {known})")
    incoming = reader(model, path)
    own = model.state_dict()
    for name, value in incoming.items():
        if name not in own:
            raise PretrainedError(f"{path}: the model has no tensor {name}")
        if tuple(own[name].shape) != tuple(value.shape):
            raise PretrainedError(
                f"{path}: {name} has shape {tuple(value.shape)} in the file, "
                f"{tuple(own[name].shape)} in the model"
            )
    with torch.no_grad():
        for name, value in incoming.items():
            own[name].copy_(torch.as_tensor(np.ascontiguousarray(value)))
    return sorted(incoming)
