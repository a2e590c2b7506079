"""The `cqaface` command line as a user runs it: JSON lines out, clear errors, nothing lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fits import Y1_FIT
from PIL import Image

from embedder import checkpoint as ckpt
from embedder.config import variant
from embedder.model import build_model
from embedder.quality import METADATA_KEY

CLI = [sys.executable, "-m", "identify.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model with y1's quality fit, so that `embed` reports a face quality."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    metadata = {METADATA_KEY: Y1_FIT.to_metadata()}
    return ckpt.save(ckpt.from_model(build_model(variant("cqa")).eval(), metadata), path)


@pytest.fixture(scope="module")
def photos(celeba_photos_dir: Path) -> list[Path]:
    return sorted(celeba_photos_dir.glob("*/*.jpg"))[:3]


@pytest.fixture
def messy_tree(tmp_path: Path, photos: list[Path]) -> Path:
    """Two subjects of real photos plus the files users really upload by mistake."""
    root = tmp_path / "photos"
    for i, photo in enumerate(photos):
        (root / f"subject{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / f"subject{i % 2}" / photo.name)
    (root / "subject0" / "notes.jpg").write_text("this is not a photo")
    (root / "subject1" / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(root / "subject1" / "wall.png")
    return root


def test_help_lists_the_commands() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for command in ("detect", "align", "embed", "export-onnx"):
        assert command in out.stdout


def test_embed_prints_one_json_line_per_face_with_a_unit_embedding(
    photos: list[Path], model_file: Path
) -> None:
    out = _run("embed", *map(str, photos), "--model", str(model_file))
    assert out.returncode == 0, out.stderr
    records = _lines(out.stdout)
    assert {r["path"] for r in records} == {str(p) for p in photos}
    for record in records:
        vector = np.array(record["embedding"])
        assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-3
        assert len(record["box"]) == 4 and len(record["landmarks"]) == 5
        assert len(record["quality"]) == 4
        assert isinstance(record["face_quality"], float) and 0 <= record["face_quality"] <= 1
        assert record["model_version"].startswith("cqaface-mobilefacenet-cqa-")


def test_embed_reports_bad_files_as_error_lines_and_exits_non_zero(
    messy_tree: Path, photos: list[Path], model_file: Path
) -> None:
    bad = [
        messy_tree / "subject0" / "notes.jpg",
        messy_tree / "subject1" / "empty.png",
        messy_tree / "subject1" / "wall.png",
    ]
    out = _run("embed", str(photos[0]), *map(str, bad), "--model", str(model_file))
    assert out.returncode == 1
    records = _lines(out.stdout)
    errors = {Path(r["path"]).name: r["error"]["code"] for r in records if "error" in r}
    assert errors == {"notes.jpg": "not_an_image", "empty.png": "empty_file", "wall.png": "no_face"}
    assert any("embedding" in r for r in records), "the good photo is still embedded"


def test_embed_without_a_model_says_where_to_get_one(photos: list[Path], tmp_path: Path) -> None:
    out = _run("embed", str(photos[0]), "--model", str(tmp_path / "missing.pt"))
    assert out.returncode == 2
    assert "no model checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_detect_writes_aligned_crops(photos: list[Path], tmp_path: Path) -> None:
    out = _run("detect", str(photos[0]), "--crops", str(tmp_path / "crops"))
    assert out.returncode == 0, out.stderr
    record = _lines(out.stdout)[0]
    assert Image.open(record["crop"]).size == (112, 112)


def test_align_mirrors_the_tree_and_reports_every_failure_with_its_reason(
    messy_tree: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "aligned"
    out = _run("align", str(messy_tree), str(dst), "--workers", "2")
    assert out.returncode == 1  # some photos failed
    report = json.loads((dst / "align-report.json").read_text())
    assert (report["total"], report["aligned"]) == (6, 3)
    reasons = {Path(f["path"]).name: f["code"] for f in report["failures"]}
    assert reasons == {
        "notes.jpg": "not_an_image",
        "empty.png": "empty_file",
        "wall.png": "no_face",
    }
    crops = sorted(dst.rglob("*.png"))
    assert len(crops) == 3 and all(Image.open(c).size == (112, 112) for c in crops)
    assert {c.parent.name for c in crops} == {"subject0", "subject1"}

    again = _run("align", str(messy_tree), str(dst))
    assert json.loads((dst / "align-report.json").read_text())["skipped"] == 3, again.stderr


def test_export_onnx_writes_a_model(model_file: Path, tmp_path: Path) -> None:
    out = _run("export-onnx", str(tmp_path / "m.onnx"), "--model", str(model_file))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000


@pytest.fixture
def orl_subset(orl_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "orl"
    root.mkdir()
    for subject in sorted(orl_dir.iterdir())[:6]:
        (root / subject.name).symlink_to(subject, target_is_directory=True)
    return root


def test_eval_identify_reports_rank1_and_tar_at_far(
    orl_subset: Path, model_file: Path, tmp_path: Path
) -> None:
    out = _run(
        "eval",
        "identify",
        "--gallery",
        str(orl_subset),
        "--gallery-size",
        "5",
        "--mask-probes",
        "--model",
        str(model_file),
        "--plot",
        str(tmp_path / "cmc.png"),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["subjects"] == 6 and result["probes"] == 30
    assert 0 <= result["rank1"] <= result["rank5"] <= 1
    assert set(result["tar_at_far"]) == {"0.1", "0.01", "0.001", "0.0001"}
    assert (tmp_path / "cmc.png").read_bytes().startswith(b"\x89PNG")


def test_eval_pairs_reads_a_csv_of_pairs(
    orl_subset: Path, model_file: Path, tmp_path: Path
) -> None:
    a, b = sorted(orl_subset.iterdir())[:2]
    rows = [
        f"{a}/1.pgm,{a}/2.pgm,1",
        f"{a}/3.pgm,{b}/1.pgm,0",
        f"{b}/2.pgm,{b}/3.pgm,1",
        f"{b}/4.pgm,{a}/4.pgm,0",
    ]
    (tmp_path / "pairs.csv").write_text("path1,path2,same\n" + "\n".join(rows) + "\n")
    out = _run(
        "eval",
        "pairs",
        "--pairs",
        str(tmp_path / "pairs.csv"),
        "--format",
        "csv",
        "--mask",
        "one",
        "--model",
        str(model_file),
        "--plot",
        str(tmp_path / "roc.png"),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["pairs"], result["genuine"], result["mask"]) == (4, 2, "one")
    assert (tmp_path / "roc.png").read_bytes().startswith(b"\x89PNG")


def test_eval_calibrate_stores_thresholds_in_the_checkpoint(
    orl_subset: Path, model_file: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    shutil.copy(model_file, model)
    out = _run("eval", "calibrate", "--faces", str(orl_subset), "--write", "--model", str(model))
    assert out.returncode == 0, out.stderr
    thresholds = ckpt.load(model).metadata["thresholds"]
    for kind in ("normal", "masked"):
        assert thresholds[kind]["0.01"] <= thresholds[kind]["0.001"]
        assert thresholds[kind]["impostor_pairs"] == 60 * 50


SHIPPED = Path(__file__).resolve().parents[1] / "embedder" / "weights" / "cqaface.pt"


@pytest.fixture(scope="module")
def bystander_lfw(celeba_photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LFW's layout: A_0001 shows A small at the centre and B larger at the left; A_0002 is
    another photo of A, B_0001 another of B. One fold: (A_0001, A_0002) matched, (A_0001,
    B_0001) mismatched. The centre face scores both right, the largest both wrong."""
    from bystander import compose, two_people

    (a1, a2), (b1, b2) = two_people(celeba_photos_dir)
    root = tmp_path_factory.mktemp("lfw")
    (root / "A").mkdir()
    (root / "B").mkdir()
    Image.fromarray(compose(a1, b1)).save(root / "A" / "A_0001.jpg", quality=95)
    shutil.copy(a2, root / "A" / "A_0002.jpg")
    shutil.copy(b2, root / "B" / "B_0001.jpg")
    (root / "pairs.txt").write_text("1\t1\nA\t1\t2\nA\t1\tB\t1\n")
    return root


@pytest.mark.parametrize(("face", "auc"), [(None, 1.0), ("centre", 1.0), ("largest", 0.0)])
def test_eval_pairs_in_lfw_format_scores_the_centre_face_by_default(
    bystander_lfw: Path, face: str | None, auc: float
) -> None:
    choice = ["--face", face] if face else []
    out = _run(
        "eval",
        "pairs",
        "--pairs",
        str(bystander_lfw / "pairs.txt"),
        "--root",
        str(bystander_lfw),
        "--model",
        str(SHIPPED),
        *choice,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["face"], result["pairs"], result["unusable_pairs"]) == (face or "centre", 2, 0)
    assert result["auc"] == auc


def test_eval_identify_takes_the_largest_face_unless_told_the_centre(
    bystander_lfw: Path, tmp_path: Path
) -> None:
    """Gallery A_0002 and B_0001; the probe is the composed photo, filed under A."""
    gallery, probes = tmp_path / "gallery", tmp_path / "probes"
    for person, photo in (("A", "A_0002.jpg"), ("B", "B_0001.jpg")):
        (gallery / person).mkdir(parents=True)
        shutil.copy(bystander_lfw / person / photo, gallery / person / photo)
    (probes / "A").mkdir(parents=True)
    shutil.copy(bystander_lfw / "A" / "A_0001.jpg", probes / "A" / "A_0001.jpg")
    ranks = {}
    for face in (None, "centre"):
        choice = ["--face", face] if face else []
        args = ["--gallery", str(gallery), "--probes", str(probes), "--model", str(SHIPPED)]
        out = _run("eval", "identify", *args, *choice)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        ranks[result["face"]] = result["rank1"]
    assert ranks == {"largest": 0.0, "centre": 1.0}


def test_eval_pairs_refuses_an_unknown_face_choice(bystander_lfw: Path) -> None:
    out = _run("eval", "pairs", "--pairs", str(bystander_lfw / "pairs.txt"), "--face", "left")
    assert out.returncode == 2
    assert "argument --face: invalid choice: 'left' (choose from 'centre', 'largest')" in out.stderr


def test_eval_attention_reports_each_part_bare_and_masked_with_a_picture(
    celeba_identities, tmp_path: Path
) -> None:
    faces = celeba_identities(3)
    picture = tmp_path / "parts.png"
    out = _run("eval", "attention", "--faces", str(faces), "--plot", str(picture), "--show", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["faces"], result["branches"], result["unusable"]) == (6, 4, 0)
    for key in ("quality_bare", "quality_masked", "quality_drop", "attention_hidden_share"):
        assert len(result[key]) == 4, key
    assert all(0 <= v <= 1 for v in result["attention_hidden_share"])
    assert 0 < result["overlap_bare"] <= 1 and 0 < result["overlap_masked"] <= 1
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_eval_attention_on_a_model_without_parts_says_so(celeba_identities, tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = ckpt.save(ckpt.from_model(build_model(variant("global")).eval()), tmp_path / "g.pt")
    out = _run("eval", "attention", "--faces", str(celeba_identities(1)), "--model", str(plain))
    assert out.returncode != 0 and out.stdout == ""
    assert "the attention report needs a CQA head (this model's is global)" in out.stderr
