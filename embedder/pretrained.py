"""Start a model from a face network trained elsewhere (MobileFaceNets, ../shared/models).

Each reader maps a foreign file onto the project's own layer names: the stem always, and the
network's own pooled embedding onto a `global` head of the same width (the ArcFace-style
reference). The files are training data: a trained checkpoint carries every weight itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from embedder import mxnet_params
from embedder.config import ModelConfig
from embedder.model import CQAFace, build_model

if TYPE_CHECKING:
    import onnx  # read lazily: only the WebFace600K reader needs it


class PretrainedError(ValueError):
    """A pretrained file is missing, of the wrong kind, or does not fit the model."""


W600K = "mobilefacenet_w600k"

# Each pretrained stem's own network: its pooled embedding as a `global` head of its width.
NATIVE: dict[str, ModelConfig] = {
    "mobilefacenet_y1": ModelConfig(
        stem="mobilefacenet_y1", head="global", embedding_size=128, qan=False, diversity="none"
    ),
    "mobilefacenet_w600k": ModelConfig(
        stem="mobilefacenet_w600k", head="global", embedding_size=512, qan=False, diversity="none"
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


# insightface's WebFace600K MobileFaceNet (an ONNX graph, batch norm folded into the convs):
# each weighted node in graph order fills the next weighted module of the port, in module order.
_ONNX_OPS: dict[str, tuple[type[torch.nn.Module], tuple[str, ...]]] = {
    "Conv": (torch.nn.Conv2d, ("weight", "bias")),
    "PRelu": (torch.nn.PReLU, ("weight",)),
    "Gemm": (torch.nn.Linear, ("weight", "bias")),
    "BatchNormalization": (
        torch.nn.BatchNorm1d,
        ("weight", "bias", "running_mean", "running_var"),
    ),
}


_PORT_KINDS = {kind for kind, _ in _ONNX_OPS.values()}


def _read_onnx(path: Path) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """The graph's weighted nodes in order, and its initializers by name."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # protobuf decoding fails in many ways
        raise PretrainedError(f"{path}: not an ONNX file ({type(error).__name__})") from None
    arrays = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    return [n for n in graph.node if n.op_type in _ONNX_OPS], arrays


def _onnx_shape(module: torch.nn.Module, slot: str) -> tuple[int, ...]:
    """The shape the ONNX graph stores a port's tensor in (PReLU slopes as C x 1 x 1; the
    linear layer's bias, which the port folds into the next batch norm, as its width)."""
    if isinstance(module, torch.nn.PReLU):
        return (module.num_parameters, 1, 1)
    if isinstance(module, torch.nn.Linear) and slot == "bias":
        return (module.out_features,)
    return tuple(getattr(module, slot).shape)


def _check_node(path: Path, node: onnx.NodeProto, name: str, module: torch.nn.Module) -> None:
    """A conv's stride and groups are not in its weights' shapes: compare them too."""
    if not isinstance(module, torch.nn.Conv2d):
        return
    import onnx

    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    own = {"strides": tuple(module.stride), "group": module.groups}
    theirs = {
        "strides": tuple(attributes.get("strides", (1, 1))),
        "group": attributes.get("group", 1),
    }
    for key, value in own.items():
        if theirs[key] != value:
            raise PretrainedError(
                f"{path}: tensor {node.input[1]!r} ({node.name}) has {key} {theirs[key]}, "
                f"the port's {name} has {value}"
            )


def w600k_state(model: CQAFace, path: Path) -> dict[str, np.ndarray]:
    """The model's tensors that insightface's `w600k_mbf.onnx` provides.

    The whole graph must be the port's network, tensor by tensor, shapes, strides and groups
    included: the first that differs is named, so that another ONNX face model (or a detector)
    fails at once. The Gemm's bias is folded into the last batch norm's mean.
    """
    nodes, arrays = _read_onnx(path)
    network = build_model(native(W600K))
    modules = [(n, m) for n, m in network.named_modules() if type(m) in _PORT_KINDS]
    state: dict[str, np.ndarray] = {}
    for node, entry in zip_longest(nodes, modules):
        if node is None:
            raise PretrainedError(f"{path}: the graph ends before the port's {entry[0]}")
        if entry is None:
            raise PretrainedError(
                f"{path}: tensor {node.input[1]!r} ({node.name}) has no place in the port"
            )
        name, module = entry
        kind, slots = _ONNX_OPS[node.op_type]
        if not isinstance(module, kind):
            raise PretrainedError(
                f"{path}: tensor {node.input[1]!r} ({node.name}, {node.op_type}) where the "
                f"port has {name} ({type(module).__name__})"
            )
        tensors = [*node.input[1:], *[""] * len(slots)]
        for slot, tensor in zip(slots, tensors, strict=False):
            if tensor not in arrays:
                raise PretrainedError(f"{path}: {node.name} has no stored tensor for {name}.{slot}")
            value, expected = arrays[tensor], _onnx_shape(module, slot)
            if value.shape != expected:
                raise PretrainedError(
                    f"{path}: tensor {tensor!r} ({node.name}) has shape {value.shape}, "
                    f"the port's {name}.{slot} has {expected}"
                )
            own = getattr(module, slot)
            state[f"{name}.{slot}"] = value if own is None else value.reshape(own.shape)
        _check_node(path, node, name, module)
    state["head.4.running_mean"] = state["head.4.running_mean"] - state.pop("head.3.bias")
    if model.config.head != "global":
        state = {name: value for name, value in state.items() if name.startswith("stem.")}
    return state


class Reader(NamedTuple):
    network: str  # what the reader takes a file of this suffix to be
    stem: str  # the only stem with that network's layers
    read: Callable[[CQAFace, Path], dict[str, np.ndarray]]


READERS = {
    ".params": Reader("insightface's MobileFaceNet y1", "mobilefacenet_y1", y1_state),
    ".onnx": Reader("insightface's WebFace600K MobileFaceNet", W600K, w600k_state),
}


def load_into(model: CQAFace, path: str | Path) -> list[str]:
    """Copies a pretrained file's weights into `model`; returns the names it set.

    The whole stem comes from the file, and every tensor the file provides must fit exactly:
    the first that does not is named with the file, so that a wrong file or a wrong stem fails
    at once instead of training from noise.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such pretrained file")
    reader = READERS.get(path.suffix)
    if reader is None:
        known = ", ".join(sorted(READERS))
        raise PretrainedError(f"{path}: unknown pretrained format (known: {known})")
    if model.config.stem != reader.stem:
        raise PretrainedError(
            f"{path}: a {path.suffix} file is read as {reader.network}, which fits the stem "
            f"{reader.stem!r}, not {model.config.stem!r}"
        )
    incoming = reader.read(model, path)
    own = model.state_dict()
    for name, value in incoming.items():
        if name not in own:
            raise PretrainedError(f"{path}: the model has no tensor {name}")
        if tuple(own[name].shape) != tuple(value.shape):
            raise PretrainedError(
                f"{path}: {name} has shape {tuple(value.shape)} in the file, "
                f"{tuple(own[name].shape)} in the model"
            )
    unset = [
        n for n in own if n.startswith("stem.") and n not in incoming and "num_batches" not in n
    ]
    if unset:
        raise PretrainedError(f"{path}: gives no tensor for {unset[0]}")
    with torch.no_grad():
        for name, value in incoming.items():
            own[name].copy_(torch.as_tensor(np.ascontiguousarray(value)))
    if model.config.head == "cqa" and model.config.part_pooling == "gdc":
        return sorted(incoming) + _warm_start_parts(model, path)
    if model.config.head == "cqa" and model.config.part_pooling == "head":
        return sorted(incoming) + _warm_start_head_parts(model, path)
    return sorted(incoming)


def _warm_start_head_parts(model: CQAFace, path: Path) -> list[str]:
    """Parts pooled by the pretrained head's own reduction start from that head: the reduction
    copied, the embedding layer the head's linear layer shared evenly by the b parts, and its
    batch norm. With even attention and qualities the embedding is then the pretrained one
    (the batch norm absorbs their scale), and each part can move away from it as it
    specialises. Returns the names it set."""
    network = build_model(native(model.config.stem))
    load_into(network, path)
    reduce, linear, norm = network.head[0], network.head[3], network.head[4]
    if model.config.embedding_size != linear.out_features:
        raise PretrainedError(
            f"{path}: parts pooled by the pretrained head start from it only with "
            f"embedding_size = {linear.out_features}, not {model.config.embedding_size}"
        )
    b = model.config.branches
    with torch.no_grad():
        model.lanet.pool[0].load_state_dict(reduce.state_dict())
        model.fc.weight.copy_(linear.weight.repeat(1, b) / b)
        model.bn.load_state_dict(norm.state_dict())
        model.bn.eps = norm.eps
    names = [f"lanet.pool.0.{n}" for n in reduce.state_dict()] + ["fc.weight"]
    return sorted(names + [f"bn.{n}" for n in norm.state_dict()])


def _warm_start_parts(model: CQAFace, path: Path) -> list[str]:
    """A head that pools parts with a GDC starts from the pretrained network's own head: its
    GDC pools every part, its embedding layer maps part i to the i-th slice of the embedding
    (block diagonal), and its batch norm is repeated per slice. With even attention each slice
    is then the pretrained embedding itself: training starts from what MS1M taught the head,
    not from noise. Returns the names it set."""
    network = build_model(native(model.config.stem))
    gdc, linear, norm = network.head[0], network.head[3], network.head[4]
    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in gdc.modules()):
        raise PretrainedError(
            f"{path}: the network's own head has no GDC for part_pooling='gdc' to start from "
            "(use part_pooling='mean')"
        )
    load_into(network, path)
    b, dim = model.config.branches, linear.out_features
    if model.config.embedding_size != b * dim or model.lanet.pool is None:
        raise PretrainedError(
            f"{path}: a GDC head starts from the pretrained one only with embedding_size = "
            f"branches x {dim} = {b * dim}, not {model.config.embedding_size}"
        )
    conv = next(m for m in gdc.modules() if isinstance(m, torch.nn.Conv2d))
    batch_norm = next(m for m in gdc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        model.lanet.pool[0].weight.copy_(conv.weight)
        model.lanet.pool[1].load_state_dict(batch_norm.state_dict())
        model.lanet.pool[1].eps = batch_norm.eps
        model.fc.weight.zero_()
        c = linear.in_features
        for i in range(b):
            model.fc.weight[i * dim : (i + 1) * dim, i * c : (i + 1) * c] = linear.weight
        for name, value in norm.state_dict().items():
            getattr(model.bn, name).copy_(value.repeat(b) if value.dim() else value)
        model.bn.eps = norm.eps
    names = [f"lanet.pool.{n}" for n in model.lanet.pool.state_dict()] + ["fc.weight"]
    return sorted(names + [f"bn.{n}" for n in norm.state_dict()])
