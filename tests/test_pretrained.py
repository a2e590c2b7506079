"""Pretrained MobileFaceNets (../shared/models) loaded into the project's stems.

The files are training data, read in place (CQAFACE_SHARED_MODELS overrides the folder); the
tests that need one skip, saying where they looked, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedder import checkpoint as ckpt
from embedder.config import ModelConfig
from embedder.inference import Embedder, preprocess
from embedder.mobilefacenet import insightface_y1
from embedder.model import CQAFace, build_model
from embedder.pretrained import PretrainedError, load_into, native

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("CQAFACE_SHARED_MODELS", ROOT.parent / "shared" / "models"))
Y1 = "mobilefacenet_y1"


def _model_file(*parts: str) -> Path:
    path = MODELS.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"pretrained file {path} not found (set CQAFACE_SHARED_MODELS)")
    return path


@pytest.fixture(scope="module")
def y1_params() -> Path:
    return _model_file("insightface-mobilefacenet-y1", "model-0000.params")


def _native(stem: str, path: Path) -> CQAFace:
    model = build_model(native(stem))
    load_into(model, path)
    return model.eval()


def _crops(celeba_aligned_dir: Path, n: int) -> np.ndarray:
    paths = sorted(celeba_aligned_dir.glob("0000[1-4]/*.webp"))[:n]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_a_pretrained_file_sets_the_whole_stem_and_no_head_of_a_cqa_model(
    y1_params: Path,
) -> None:
    model = build_model(ModelConfig(stem=Y1))
    names = load_into(model, y1_params)
    stem = [n for n in model.state_dict() if n.startswith("stem.") and "num_batches" not in n]
    assert names == sorted(stem)


# ----- y1: its own embedding, untrained, on the project's validation pairs --------------------


@pytest.mark.slow
def test_y1_with_its_own_head_verifies_the_6000_validation_pairs_at_93_percent(
    y1_params: Path, celeba_aligned_dir: Path, celeba_photos_dir: Path, tmp_path: Path
) -> None:
    """The pairs trainer/data.py's validator draws (10 folds of 300 matched + 300 mismatched
    over the 400 validation identities), scored as it scores them: flip test, 10-fold accuracy.
    `max_per_fold` caps each kind, so 300 (val_pairs_per_fold's default) makes the 6,000."""
    from trainer.evaluate import verify_pairs
    from trainer.pairs import list_identities, listing_resolver, read_lfw_pairs
    from trainer.split import PAIRS_FILE, write_split

    holdout = list_identities(celeba_photos_dir)
    write_split(
        celeba_aligned_dir, tmp_path, holdout=holdout, n_validation=400, seed=0, max_per_fold=300
    )
    pairs = read_lfw_pairs(tmp_path / PAIRS_FILE, listing_resolver(celeba_aligned_dir))
    assert (len(pairs), sum(p.same for p in pairs)) == (6000, 3000)
    # verify_pairs embeds each of the ~4,000 distinct crops once; 16 to a batch (32 with the
    # mirror images) keep a CPU's activations in cache: about half the time of 64.
    embedder = Embedder(_native(Y1, y1_params), device="cpu", flip=True, batch_size=16)
    result = verify_pairs(embedder, pairs)
    print(f"y1, own head, untrained: accuracy {result['accuracy']:.4f}, AUC {result['auc']:.4f}")
    assert result["unusable_pairs"] == 0
    assert result["accuracy"] >= 0.93


# ----- the wrong file fails, naming the file and what does not fit -----------------------------


def test_a_teacher_file_holds_y1s_own_embedding_of_every_bare_crop(
    y1_params: Path, celeba_identities, tmp_path: Path
) -> None:
    """trainer/teacher.py: distillation's targets, read back by path (trainer/distill.py)."""
    from trainer.distill import Teacher
    from trainer.teacher import main

    faces = celeba_identities(3)
    out = tmp_path / "teacher.npz"
    main([str(faces), str(out), "--init", str(y1_params)])
    paths = sorted(faces.glob("*/*.webp"))
    with np.load(out) as saved:
        assert saved["paths"].tolist() == [str(p.relative_to(faces)) for p in paths]
        stored = saved["embeddings"].astype(np.float32)
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        own = _native(Y1, y1_params)(torch.from_numpy(preprocess(crops))).embedding
    own = torch.nn.functional.normalize(own, dim=1).numpy()
    assert np.abs(stored - own).max() < 1e-3  # float16 of the same vectors
    teacher = Teacher.for_paths(out, faces, paths)
    assert teacher.present.all() and teacher.dim == 128


def _error(model: CQAFace, path: Path) -> str:
    with pytest.raises(PretrainedError) as error:
        load_into(model, path)
    return str(error.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model-0000.params"
    assert _error(build_model(native(Y1)), path) == f"{path}: no such pretrained file"


def test_a_text_file_named_params_is_not_an_mxnet_file(tmp_path: Path) -> None:
    path = tmp_path / "model-0000.params"
    path.write_text("these are not the weights you are looking for\n")
    message = _error(build_model(native(Y1)), path)
    assert message.startswith(f"{path}: not an MXNet .params file (magic ")


def test_a_project_checkpoint_is_not_a_pretrained_network(tmp_path: Path) -> None:
    model = build_model(native(Y1))
    path = ckpt.save(ckpt.from_model(model), tmp_path / "model.pt")
    assert _error(model, path) == (f"{path}: unknown pretrained format (known: .onnx, .params)")


def test_a_head_of_another_width_is_a_shape_mismatch_and_changes_nothing(
    y1_params: Path,
) -> None:
    model = build_model(ModelConfig(**{**native(Y1).to_dict(), "embedding_size": 512}))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert _error(model, y1_params) == (
        f"{y1_params}: head.3.weight has shape (128, 512) in the file, (512, 512) in the model"
    )
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())


# ----- InputNorm: one preprocessing path for every stem --------------------------------------


def test_y1_stem_sees_the_pipeline_input_rescaled_to_its_own_x_over_128() -> None:
    """The pipeline gives (p - 127.5) / 127.5; y1 was trained on (p - 127.5) / 128."""
    stem = insightface_y1().eval()
    x = torch.from_numpy(preprocess(np.arange(112 * 112 * 3, dtype=np.uint8).reshape(112, 112, 3)))
    with torch.no_grad():
        own = x * (127.5 / 128)
        for stage in stem.stages:
            own = stage(own)
        assert torch.equal(stem.forward_to(x, len(stem.stages) - 1), own)


def test_a_gdc_head_starts_as_the_pretrained_head_on_every_part(
    y1_params: Path, celeba_aligned_dir: Path
) -> None:
    """Each embedding slice of a part pooled over the whole map (even attention) is the
    pretrained network's own embedding: the head starts from MS1M's, not from noise."""
    stem, path = Y1, y1_params
    model = build_model(ModelConfig(stem=stem, part_pooling="gdc")).eval()
    names = load_into(model, path)
    assert {"lanet.pool.0.weight", "fc.weight", "bn.running_var"} <= set(names)
    x = torch.from_numpy(preprocess(_crops(celeba_aligned_dir, 8)))
    with torch.inference_mode():
        features = model.stem.forward_to(x, model.stage)
        whole = model.lanet.pool(features).flatten(1).repeat(1, model.config.branches)
        slices = model.bn(model.fc(whole)).split(128, dim=1)
        own = _native(stem, path)(x).embedding
    for part in slices:
        torch.testing.assert_close(part, own, rtol=1e-4, atol=1e-4)


def test_a_gdc_head_of_another_width_cannot_start_from_the_pretrained_head(
    y1_params: Path,
) -> None:
    model = build_model(ModelConfig(stem=Y1, part_pooling="gdc", embedding_size=256))
    assert _error(model, y1_params) == (
        f"{y1_params}: a GDC head starts from the pretrained one only with embedding_size = "
        "branches x 128 = 512, not 256"
    )


# ----- WebFace600K: the port against the ONNX file it is read from ----------------------------

W600K = "mobilefacenet_w600k"
MAP = "509"  # PRelu_92's output: the 512x7x7 map, the stem's last stage


@pytest.fixture(scope="module")
def w600k_onnx() -> Path:
    return _model_file("insightface-w600k-mbf", "w600k_mbf.onnx")


def _onnx_outputs(path: Path, x: np.ndarray, extra: str) -> list[np.ndarray]:
    """The graph's output and one inner tensor, by onnxruntime on one thread."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(path))
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(extra, onnx.TensorProto.FLOAT, None)
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the graph declares batch 1; it runs any batch
    session = ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input.1": x})


def test_w600k_port_matches_onnxruntime_on_real_crops(
    w600k_onnx: Path, celeba_aligned_dir: Path
) -> None:
    """The same 512-d embedding and 512x7x7 map as the file, each fed its own input: the
    graph gets (p - 127.5) / 127.5 on RGB, computed here; the port gets the pipeline's
    preprocessing, which must be that scaling (the stem adds none). Float32 rounding through
    ~50 layers leaves about 1e-5 on the embedding (components up to ~4); a PReLU slope on the
    wrong axis, a wrong stride or a scaling of 1/128 moves it by far more."""
    crops = _crops(celeba_aligned_dir, 8)
    own_input = (crops.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5
    embedding, feature_map = _onnx_outputs(w600k_onnx, own_input, MAP)
    model = _native(W600K, w600k_onnx)
    with torch.no_grad():
        x = torch.from_numpy(preprocess(crops))
        ours = model(x).embedding.numpy()
        ours_map = model.stem.forward_to(x, model.stage).numpy()
    assert ours.shape == embedding.shape == (8, 512)
    assert ours_map.shape == feature_map.shape == (8, 512, 7, 7)
    assert np.abs(ours - embedding).max() < 1e-4
    assert np.abs(ours_map - feature_map).max() < 1e-4


def _edited(path: Path, out: Path, edit) -> Path:
    """A copy of the graph with one edit, saved under `out`."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(path))
    edit(graph, onnx)
    onnx.save(graph, str(out))
    return out


def _replace(graph, onnx, name: str, value: np.ndarray) -> None:
    index = next(i for i, t in enumerate(graph.graph.initializer) if t.name == name)
    graph.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(value, name))


def test_w600k_gemm_bias_is_folded_into_the_last_batch_norm(
    w600k_onnx: Path, tmp_path: Path
) -> None:
    """BN(Wx + b) with mean m is BN(Wx) with mean m - b. (The file's own bias is ~4e-8, so
    the onnxruntime comparison cannot see the fold.)"""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(w600k_onnx))
    gemm, norm = graph.graph.node[-2], graph.graph.node[-1]
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in graph.graph.initializer}
    shift = np.linspace(-2, 2, 512, dtype=np.float32)

    def shifted(g, o) -> None:
        _replace(g, o, gemm.input[2], arrays[gemm.input[2]] + shift)
        _replace(g, o, norm.input[3], arrays[norm.input[3]] + shift)

    path = _edited(w600k_onnx, tmp_path / "shifted.onnx", shifted)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        original = _native(W600K, w600k_onnx)(x).embedding
        moved = _native(W600K, path)(x).embedding
    torch.testing.assert_close(moved, original)


def test_w600k_stem_loads_whole_into_a_cqa_model_and_no_head(w600k_onnx: Path) -> None:
    model = build_model(ModelConfig(stem=W600K))
    names = load_into(model, w600k_onnx)
    stem = [n for n in model.state_dict() if n.startswith("stem.")]
    assert names == sorted(stem)
    assert model.stem.channels[-1] == 512 and model.stem.sizes[-1] == 7


def test_a_w600k_graph_with_a_tensor_of_another_shape_names_it(
    w600k_onnx: Path, tmp_path: Path
) -> None:
    """Conv_78 (the last stage's projection, 512 -> 256) narrowed to 128 outputs."""

    def narrowed(g, o) -> None:
        node = next(n for n in g.graph.node if n.name == "Conv_78")
        _replace(g, o, node.input[1], np.zeros((128, 512, 1, 1), np.float32))

    path = _edited(w600k_onnx, tmp_path / "narrow.onnx", narrowed)
    assert _error(build_model(native(W600K)), path) == (
        f"{path}: tensor '{_input(w600k_onnx, 'Conv_78')}' (Conv_78) has shape (128, 512, 1, 1), "
        "the port's stem.stages.2.0.body.2.0.weight has (256, 512, 1, 1)"
    )


def test_a_w600k_graph_with_another_stride_names_the_tensor(
    w600k_onnx: Path, tmp_path: Path
) -> None:
    """Same weights, a stride the shapes cannot show: Conv_6, the first downsampling to 28."""

    def unstrided(g, o) -> None:
        node = next(n for n in g.graph.node if n.name == "Conv_6")
        strides = next(a for a in node.attribute if a.name == "strides")
        strides.ints[:] = [1, 1]

    path = _edited(w600k_onnx, tmp_path / "unstrided.onnx", unstrided)
    assert _error(build_model(native(W600K)), path) == (
        f"{path}: tensor '{_input(w600k_onnx, 'Conv_6')}' (Conv_6) has strides (1, 1), "
        "the port's stem.stages.0.2.body.1.0 has (2, 2)"
    )


def _input(path: Path, node_name: str) -> str:
    onnx = pytest.importorskip("onnx")
    return next(n for n in onnx.load(str(path)).graph.node if n.name == node_name).input[1]


def test_a_face_detector_onnx_is_not_the_w600k_network() -> None:
    """Another real ONNX file of the same source (SCRFD): its first conv is named."""
    path = _model_file("insightface-scrfd-500m", "scrfd_500m_bnkps.onnx")
    assert _error(build_model(native(W600K)), path) == (
        f"{path}: tensor '555' (Conv_0) has shape (16, 3, 3, 3), "
        "the port's stem.stages.0.0.0.weight has (128, 3, 3, 3)"
    )


def test_a_text_file_named_onnx_is_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "w600k_mbf.onnx"
    path.write_text("these are not the weights you are looking for\n")
    assert _error(build_model(native(W600K)), path) == f"{path}: not an ONNX file (DecodeError)"


def test_the_w600k_file_does_not_load_into_the_y1_stem(w600k_onnx: Path) -> None:
    assert _error(build_model(native(Y1)), w600k_onnx) == (
        f"{w600k_onnx}: a .onnx file is read as insightface's WebFace600K MobileFaceNet, which "
        f"fits the stem '{W600K}', not '{Y1}'"
    )


def test_a_gdc_head_cannot_start_from_the_w600k_head(w600k_onnx: Path) -> None:
    """Its head has no 7x7 depthwise pooling: there is nothing for GDC parts to start from."""
    model = build_model(ModelConfig(stem=W600K, part_pooling="gdc"))
    assert _error(model, w600k_onnx) == (
        f"{w600k_onnx}: the network's own head has no GDC for part_pooling='gdc' to start from "
        "(use part_pooling='mean')"
    )


def test_parts_pooled_by_the_w600k_head_start_as_its_own_embedding(
    w600k_onnx: Path, celeba_aligned_dir: Path
) -> None:
    """With every part attending to the whole map at full quality, the head is the pretrained
    network's own: its reduction, its linear layer shared evenly by the parts, its BN."""
    model = build_model(ModelConfig(stem=W600K, part_pooling="head")).eval()
    names = load_into(model, w600k_onnx)
    assert {"lanet.pool.0.0.weight", "fc.weight", "bn.running_var"} <= set(names)
    x = torch.from_numpy(preprocess(_crops(celeba_aligned_dir, 8)))
    with torch.inference_mode():
        features = model.stem.forward_to(x, model.stage)
        whole = model.lanet.pool(features).repeat(1, model.config.branches)
        embedding = model.bn(model.fc(whole))
        own = _native(W600K, w600k_onnx)(x).embedding
    torch.testing.assert_close(embedding, own, rtol=1e-4, atol=1e-4)
    assert model(x).embedding.shape == (8, 512)


def test_parts_pooled_by_a_head_without_a_reduction_are_refused() -> None:
    with pytest.raises(ValueError, match="has no 1x1 reduction before a flatten"):
        build_model(ModelConfig(stem=Y1, part_pooling="head"))


def test_the_y1_file_does_not_load_into_the_w600k_stem(y1_params: Path) -> None:
    assert _error(build_model(native(W600K)), y1_params) == (
        f"{y1_params}: a .params file is read as insightface's MobileFaceNet y1, which fits "
        f"the stem '{Y1}', not '{W600K}'"
    )
