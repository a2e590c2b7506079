"""Embedding distillation: teacher vectors follow the dataset's samples, the distillation term
trains the student towards them, and the served model carries nothing of the teacher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder import checkpoint as ckpt
from trainer.distill import Distillation, Teacher

IDENTITIES = 12


@pytest.fixture(scope="module")
def faces(celeba_identities) -> Path:
    """Real identities with 5+ aligned crops each."""
    return celeba_identities(IDENTITIES)


def _teacher_file(root: Path, out: Path, skip: int = 0) -> Path:
    """A teacher whose vectors are an identity direction plus noise, like a real one's."""
    rng = np.random.default_rng(0)
    paths, vectors = [], []
    for folder in sorted(root.iterdir()):
        centre = rng.normal(size=32)
        for image in sorted(folder.glob("*.webp"))[skip:]:
            paths.append(f"{folder.name}/{image.name}")
            vectors.append(centre + 0.3 * rng.normal(size=32) + 5.0)  # a shared offset, too
    np.savez(out, paths=np.array(paths), embeddings=np.array(vectors, np.float32))
    return out


def test_teacher_vectors_follow_the_samples_and_say_which_are_missing(
    faces: Path, tmp_path: Path
) -> None:
    file = _teacher_file(faces, tmp_path / "teacher.npz", skip=1)  # first image of each lacks one
    paths = sorted(faces.glob("*/*.webp"))
    teacher = Teacher.for_paths(file, faces, paths)
    firsts = {sorted(p.parent.glob("*.webp"))[0] for p in paths}
    assert [p not in firsts for p in paths] == teacher.present.tolist()
    kept = teacher.vectors[teacher.present]
    np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1, atol=1e-5)
    assert abs(kept.mean(axis=0)).max() < 0.1  # centred: the shared offset is gone
    same = [p.parent.name for p in paths]
    sims = kept @ kept.T
    labels = np.array(same)[teacher.present]
    genuine = labels[:, None] == labels[None, :]
    assert sims[genuine].mean() > sims[~genuine].mean() + 0.5


def test_the_distillation_term_ignores_samples_without_a_teacher_vector() -> None:
    distill = Distillation(8, 4)
    embeddings = torch.randn(3, 8)
    targets = torch.randn(3, 4)
    present = torch.tensor([True, False, True])
    alone = distill(embeddings[[0, 2]], targets[[0, 2]], torch.tensor([True, True]))
    assert torch.allclose(distill(embeddings, targets, present), alone)


def test_training_with_a_teacher_pulls_the_student_towards_it(faces: Path, tmp_path: Path) -> None:
    teacher = _teacher_file(faces, tmp_path / "teacher.npz")
    config = tmp_path / "tiny.py"
    config.write_text(
        "from embedder.config import ModelConfig\n"
        "from trainer.config import DataConfig, TrainConfig\n"
        "config = TrainConfig(name='tiny', model=ModelConfig(),\n"
        f"    data=DataConfig(root={str(faces)!r}, validation_identities=0,\n"
        f"        teacher={str(teacher)!r}),\n"
        "    batch_size=16, lr=0.05, cosface_s=16.0, cosface_m=0.1, warmup_epochs=0.1,\n"
        "    epochs=100, milestones=(), final_lr=None, final_epoch=None, log_every=1,\n"
        "    checkpoint_every=1000, val_every=None, max_steps=40, distill_weight=5.0)\n"
    )
    command = [sys.executable, "-m", "identify.cli", "train", str(config)]
    command += ["--output", str(tmp_path)]
    subprocess.run(command, check=True, timeout=600, env={"OMP_NUM_THREADS": "2", "PATH": ""})
    log = (tmp_path / "tiny" / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in log]
    distill = [r["distill"] for r in records if r["kind"] == "train"]
    assert np.mean(distill[-5:]) < 0.7 * np.mean(distill[:5])
    served = ckpt.load(tmp_path / "tiny" / "model.pt")
    assert not any("projection" in name for name in served.state_dict)
