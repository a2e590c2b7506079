"""`make bench-mask-fusion` measures the default of CQAFACE_MASK_FUSION through the served gallery
and searcher; a three-person run keeps it working as those change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedder import checkpoint
from embedder import settings as embedder_settings

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {
    "rank1",
    "rank5",
    "tar_at_far_1e-2",
    "tar_at_far_1e-3",
    "genuine_above_served_threshold",
    "impostors_above_served_threshold",
}


def test_every_policy_is_measured_at_the_served_masked_threshold(
    celeba_photos_dir: Path, celeba_aligned_dir: Path, tmp_path: Path
) -> None:
    model = embedder_settings.model_path()
    if not model.is_file():
        pytest.skip(f"no trained model at {model}: the benchmark measures the shipped checkpoint")
    out = tmp_path / "fusion.json"
    command = [sys.executable, "benchmarks/bench_mask_fusion.py", "--out", str(out)]
    command += ["--identities", "3", "--gallery", "2", "--probes", "1"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)

    report = json.loads(out.read_text())
    served = checkpoint.load(model).metadata["thresholds"]["masked"]["0.001"]
    assert report["served_masked_threshold_far_1e-3"] == served
    assert (report["identities"], report["probes"], report["gallery_per_identity"]) == (3, 3, 2)
    assert list(report["policies"]) == ["normal", "masked", "max", "mean"]
    assert all(set(figures) == FIGURES for figures in report["policies"].values())
    assert set(report["unmasked_probes"]) == FIGURES - {
        "genuine_above_served_threshold",
        "impostors_above_served_threshold",
    }
