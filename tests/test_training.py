"""Training for real on CPU: the loss falls, an interrupted run resumes exactly, and two
processes (gloo) train like one at the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedder import checkpoint as ckpt
from trainer.schedule import Schedule

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


def test_two_gloo_processes_train_like_one_at_the_same_global_batch(
    tiny_faces: Path, tmp_path: Path
) -> None:
    steps, window = 60, 12
    config = _config(tmp_path, tiny_faces, steps=steps, checkpoint_every=1000)
    subprocess.run(
        _train_command(config, tmp_path / "one"),
        check=True,
        env=_env(),
        capture_output=True,
        timeout=900,
    )
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "identify.cli",
            "train",
            str(config),
            "--output",
            str(tmp_path / "two"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one, pair = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(pair) == list(range(1, steps + 1))
    smooth_one, smooth_two = _windows(one, window), _windows(pair, window)
    # Same samples in the same global batches from the same weights, gradients averaged over
    # processes: the first steps agree closely. Batch norm differs (statistics over 8 faces
    # per process instead of 16), and the curves part as training goes on: by step 60 the
    # two-process loss was 37% above the one-process one in session 3 (4.32 against 3.15) and
    # 54% in session 4 (4.32 against 2.80, the one-process run alone moving between machines).
    # Batch norm is the whole cause: one process that runs each batch of 16 as two forward
    # passes of 8 and averages their losses ended at 4.17 (session 5, the same 60 steps),
    # within 4% of the two-process run's 4.32 in every window of 12 steps, where the plain
    # one-process run ended at 3.15.
    # So the match is checked over the first 24 steps, where that drift is still small, and over
    # the whole run only that both learn. Single steps swing by +-1 (batches of 16), so a change
    # of summation order alone (session 6: the attention loss's pairs as slices, the same values)
    # moved each 12-step mean by 2-3%; the 24-step means agreed within 1.1% both before and after.
    assert sum(smooth_two[:2]) == pytest.approx(sum(smooth_one[:2]), rel=0.05)
    # The loss must fall in both. Seen: one process 5.36 -> 3.15 (-41%) and 5.30 -> 2.80
    # (-47%), two processes 5.36 -> 4.32 (-19%) over the 60 steps.
    for curve in (smooth_one, smooth_two):
        assert curve[-1] < 0.85 * curve[0], f"the loss must fall: {curve}"


def _windows(losses: dict[int, float], size: int) -> list[float]:
    values = [losses[s] for s in sorted(losses)]
    return [sum(values[i : i + size]) / size for i in range(0, len(values), size)]


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
