"""Serving on ONNX Runtime: the same embeddings and detections as PyTorch on real data, the
runtime CQAFACE_RUNTIME picks, and the cache of exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from embedder import checkpoint as ckpt
from embedder import onnx_cache, runtime, settings
from embedder.imageio import load_image
from embedder.inference import Embedder
from embedder.mtcnn import MTCNN, torch_networks
from embedder.mtcnn_onnx import OrtNet, onnx_networks
from embedder.onnx_export import OnnxEmbedder, SplitPReLU, cached_export, split_prelu
from identify.search.encode import FaceEncoder

COSINE_BAR = 0.9999  # issue #18: "equal output" means cosine >= 0.9999 on real crops
PIXELS = 1e-3  # the bound tests/test_mtcnn.py holds batching to, in photo pixels


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX cache for the module: the shipped model is exported once."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(autouse=True)
def _cache_env(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_ONNX_CACHE", str(cache))
    for name in ("CQAFACE_RUNTIME", "CQAFACE_DEVICE"):
        monkeypatch.delenv(name, raising=False)


# The default checkpoint and the fast one beside it (embedder/weights/MODEL_CARD*.md).
SHIPPED = [settings.DEFAULT_MODEL, settings.DEFAULT_MODEL.parent / "cqaface-y1.pt"]


@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
def test_onnx_runtime_embeds_real_crops_as_pytorch_does(
    shipped: Path, celeba_aligned_dir: Path
) -> None:
    """Every shipped checkpoint, as ONNX Runtime serves it on the CPU."""
    paths = sorted(celeba_aligned_dir.glob("*/*.webp"))[::40][:48]
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    checkpoint = ckpt.load(shipped)
    served = OnnxEmbedder.from_checkpoint(checkpoint).embed(crops)
    reference = Embedder.from_checkpoint(checkpoint, device="cpu").embed(crops)
    assert (served.vectors * reference.vectors).sum(1).min() >= COSINE_BAR
    assert OnnxEmbedder.from_checkpoint(checkpoint).version == checkpoint.version


def test_onnx_runtime_finds_the_same_faces_in_real_photos(celeba_photos_dir: Path) -> None:
    paths = sorted(celeba_photos_dir.glob("*/*.jpg"))[::60]
    photos = [load_image(p) for p in paths]
    served = MTCNN(networks=onnx_networks()).detect_batch(photos)
    reference = MTCNN(networks=torch_networks()).detect_batch(photos)
    assert sum(map(bool, reference)) == len(photos)
    for ours, theirs in zip(served, reference, strict=True):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a.box, b.box, rtol=0, atol=PIXELS)
            np.testing.assert_allclose(a.landmarks, b.landmarks, rtol=0, atol=PIXELS)


@pytest.mark.parametrize(
    ("channels", "shape"), [(16, (3, 16, 9, 7)), (1, (3, 5, 9, 7)), (16, (4, 16)), (1, (4, 6))]
)
def test_the_exported_prelu_is_prelu_bit_for_bit(channels: int, shape: tuple[int, ...]) -> None:
    prelu = nn.PReLU(channels)
    with torch.no_grad():  # slopes of both signs and above 1, as trained nets have them
        prelu.weight.copy_(torch.linspace(-1.5, 2.4, channels))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 0.0
    with torch.no_grad():
        assert torch.equal(SplitPReLU(prelu)(x), prelu(x))


def test_the_exported_graphs_hold_no_prelu_and_the_nets_keep_theirs() -> None:
    """ONNX Runtime's PRelu kernel cost the CPU path 65% of the embedder's time."""
    checkpoint = ckpt.load(settings.model_path())
    model = checkpoint.build()
    assert not any(isinstance(m, nn.PReLU) for m in split_prelu(model).modules())
    assert any(isinstance(m, nn.PReLU) for m in model.modules())  # a copy was changed
    graphs = [cached_export(checkpoint)]
    onnx_networks()
    graphs += sorted(Path(settings.onnx_cache_dir()).glob("mtcnn-*.onnx"))
    for graph in graphs:
        assert "PRelu" not in {node.op_type for node in onnx.load(str(graph)).graph.node}


def test_auto_serves_on_onnx_runtime_on_cpu_and_on_pytorch_on_cuda() -> None:
    assert runtime.choose("cpu") == "onnx"
    assert runtime.choose("cuda") == "torch"
    assert runtime.choose() == "onnx"  # this machine has no GPU
    encoder = FaceEncoder.load()
    assert isinstance(encoder.embedder, OnnxEmbedder)
    assert isinstance(runtime.load_detector().detector.networks.pnet, OrtNet)


def test_torch_serves_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_RUNTIME", "torch")
    assert runtime.choose("cpu") == "torch"
    assert type(FaceEncoder.load().embedder) is Embedder
    assert not isinstance(runtime.load_detector().detector.networks.pnet, OrtNet)
    monkeypatch.setenv("CQAFACE_RUNTIME", "onnx")
    assert runtime.choose("cuda") == "onnx"


def test_an_unknown_runtime_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_RUNTIME", "fast")
    with pytest.raises(ValueError) as error:
        runtime.load_embedder()
    assert str(error.value) == "CQAFACE_RUNTIME='fast': expected one of auto, torch, onnx"


def test_a_cached_graph_is_reused_and_a_corrupt_one_is_exported_again(cache: Path) -> None:
    onnx_networks()
    pnet = next(cache.glob("mtcnn-pnet-*.onnx"))
    stamp = pnet.stat().st_mtime_ns
    onnx_networks()
    assert pnet.stat().st_mtime_ns == stamp  # intact: not exported again
    pnet.write_bytes(pnet.read_bytes()[:100])  # truncated, as by a full disk
    nets = onnx_networks()
    assert pnet.stat().st_size > 100
    photo = np.zeros((60, 60, 3), np.uint8)
    assert MTCNN(networks=nets).detect(photo) == []  # the rebuilt graph runs


def test_the_cache_exports_only_when_the_key_changes(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(path: Path) -> None:
        calls.append(path)
        path.write_bytes(b"graph")

    first = onnx_cache.cached("thing", "key1", build)
    assert onnx_cache.cached("thing", "key1", build) == first
    assert len(calls) == 1
    second = onnx_cache.cached("thing", "key2", build)
    assert second != first and len(calls) == 2
    first.write_bytes(b"grapH")  # same size, other bytes
    assert onnx_cache.cached("thing", "key1", build) == first
    assert len(calls) == 3 and first.read_bytes() == b"graph"
    assert not list(first.parent.glob(".*"))  # no temporary file left behind
