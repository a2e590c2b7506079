"""Training for real on CPU: the loss falls, an interrupted run resumes exactly, and two
processes (gloo) compute exactly what one computes in two micro-batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder import checkpoint as ckpt
from trainer.config import DataConfig, load_config
from trainer.data import training_set
from trainer.sampler import ResumableSampler
from trainer.schedule import Schedule
from trainer.train import TrainingSet, train

IDENTITIES = 16


@pytest.fixture(scope="module")
def tiny_faces(celeba_identities) -> Path:
    """Real identities with 5+ aligned crops each."""
    return celeba_identities(IDENTITIES)


def _config(tmp_path: Path, faces: Path, steps: int, **extra: object) -> Path:
    settings = {
        "batch_size": 16,
        "lr": 0.1,
        "cosface_s": 16.0,
        "cosface_m": 0.1,
        "warmup_epochs": 0.2,
        "epochs": 100,
        "milestones": (),
        "final_lr": None,
        "final_epoch": None,
        "checkpoint_every": 2,
        "log_every": 1,
        "val_every": None,
        "max_steps": steps,
        **extra,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.py"
    path.write_text(
        "from embedder.config import ModelConfig\n"
        "from trainer.config import DataConfig, TrainConfig\n"
        f"config = TrainConfig(name='tiny', model=ModelConfig(),\n"
        f"    data=DataConfig(root={str(faces)!r}, validation_identities=0, preload=True),\n"
        f"    **{settings!r})\n"
    )
    return path


def _train_command(config: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "identify.cli", "train", str(config), "--output", str(output)]


def _losses(run: Path) -> dict[int, float]:
    """The last logged loss for each step (a resumed run logs the steps after its checkpoint)."""
    records = [json.loads(line) for line in (run / "tiny" / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def test_an_interrupted_run_resumes_to_the_same_loss_curve(
    tiny_faces: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, tiny_faces, steps=8)
    subprocess.run(
        _train_command(config, tmp_path / "whole"),
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )

    killed = subprocess.Popen(
        _train_command(config, tmp_path / "cut"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "cut" / "tiny" / "checkpoints" / "step-00000004.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert checkpoint.exists(), "the run never reached its step-4 checkpoint"
    resumed = subprocess.run(
        _train_command(config, tmp_path / "cut"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr

    log = (tmp_path / "cut" / "tiny" / "log.jsonl").read_text()
    resume_steps = [json.loads(line)["step"] for line in log.splitlines() if '"resume"' in line]
    assert resume_steps and 4 <= resume_steps[0] < 8
    whole, cut = _losses(tmp_path / "whole"), _losses(tmp_path / "cut")
    assert sorted(cut) == sorted(whole) == list(range(1, 9))
    for step in range(1, 9):
        assert cut[step] == pytest.approx(whole[step], rel=1e-5), step
    model = ckpt.load(tmp_path / "cut" / "tiny" / "model.pt")
    assert model.metadata["training"]["steps"] == 8
    assert model.version == ckpt.load(tmp_path / "whole" / "tiny" / "model.pt").version


def test_two_gloo_processes_compute_what_one_does_in_two_micro_batches(
    tiny_faces: Path, tmp_path: Path
) -> None:
    # Rank r of 2 gets rows r::2 of each global batch, and one process with micro_batches=2
    # runs those same rows as its micro-batch r: batch norm sees the same 8 faces, and the
    # gradients are averaged over the same halves (halving is exact in floating point). So the
    # runs agree step for step: seen bitwise equal, losses and weights, over the 24 steps.
    # Clipping is off because it hides the gradient's scale: with it, a DDP that summed instead
    # of averaging matched for the first 14 steps, every gradient norm being over the limit.
    steps, settings = 24, {"grad_clip": None}
    one = _config(tmp_path / "one", tiny_faces, steps=steps, micro_batches=2, **settings)
    two = _config(tmp_path / "two", tiny_faces, steps=steps, micro_batches=1, **settings)
    subprocess.run(
        _train_command(one, tmp_path / "one"),
        check=True,
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    pair = subprocess.run(
        _torchrun(2) + _train_command(two, tmp_path / "two")[1:],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pair.returncode == 0, pair.stderr[-3000:]

    single, double = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(single) == sorted(double) == list(range(1, steps + 1))
    for step in single:
        assert double[step] == pytest.approx(single[step], rel=1e-4), step
    first, second = (_parameters(tmp_path / run / "tiny" / "model.pt") for run in ("one", "two"))
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-4, atol=1e-6, msg=name)


def _torchrun(processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]


def _parameters(model_file: Path) -> dict[str, torch.Tensor]:
    """The serving model's learnt weights: batch norm's running statistics are left out, as
    DDP broadcasts rank 0's (its first 8 faces) where one process tracks both halves."""
    model = ckpt.load(model_file).build()
    return {name: p.detach() for name, p in model.named_parameters()}


def test_the_loss_falls_on_faces_seen_at_every_step(tiny_faces: Path, tmp_path: Path) -> None:
    # One face per identity and a batch of all 16, without augmentation: each step sees the
    # same faces, which the model memorises. Seen: 4.63 at step 1, 0.41, 0.14, 0.52 at steps
    # 6-8; a model that does not learn stays near the first step's loss.
    faces = _first_face_of_each_identity(tiny_faces)
    config = load_config(str(_config(tmp_path, tiny_faces, steps=8, warmup_epochs=0)))
    train(config.with_overrides(output=str(tmp_path), checkpoint_every=1000), faces)

    losses = _losses(tmp_path)
    assert sum(losses[s] for s in (6, 7, 8)) / 3 < losses[1] / 4, losses


class _Subset:
    def __init__(self, source: TrainingSet, indices: list[int]) -> None:
        self.source, self.indices, self.num_classes = source, indices, source.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.source[self.indices[index]]


def _first_face_of_each_identity(root: Path) -> _Subset:
    faces = training_set(DataConfig(root=str(root), validation_identities=0))
    first: dict[int, int] = {}
    for index in range(len(faces)):
        first.setdefault(faces[index][1], index)
    return _Subset(faces, list(first.values()))


def test_a_local_batch_that_does_not_split_into_micro_batches_is_refused() -> None:
    with pytest.raises(ValueError, match=r"local batch 8 .* into 3 micro-batches"):
        ResumableSampler(80, batch_size=16, world=2, micro_batches=3)
    assert ResumableSampler(80, batch_size=16, world=2, micro_batches=4).local_batch == 8


def test_schedule_warms_up_linearly_then_drops_by_ten_at_each_milestone() -> None:
    s = Schedule(
        base_lr=0.1,
        steps_per_epoch=100,
        epochs=12,
        warmup_epochs=2,
        milestones=(7, 10),
        final_lr=1e-4,
        final_epoch=11,
    )
    assert s.lr(0) == pytest.approx(0.1 / 200)
    assert s.lr(99) == pytest.approx(0.05)
    assert s.lr(200) == pytest.approx(0.1)
    assert s.lr(699) == pytest.approx(0.1)
    assert s.lr(700) == pytest.approx(0.01)
    assert s.lr(1000) == pytest.approx(0.001)
    assert s.lr(1100) == pytest.approx(1e-4)


def test_cosine_schedule_decays_to_zero_at_the_end() -> None:
    s = Schedule(base_lr=0.1, steps_per_epoch=10, epochs=10, kind="cosine")
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(50) == pytest.approx(0.05)
    assert s.lr(100) == pytest.approx(0.0, abs=1e-9)
