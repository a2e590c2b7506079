"""`cqaface ablate`: every variant trains with the same budget, is measured the same way, and
lands as a row of a markdown table; a finished variant is measured again, never retrained."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def faces(celeba_identities) -> Path:
    """40 real identities with 5+ aligned crops each."""
    return celeba_identities(40)


def test_ablate_writes_one_row_per_variant_and_reuses_finished_runs(
    faces: Path, tmp_path: Path
) -> None:
    config = tmp_path / "base.py"
    config.write_text(
        "from embedder.config import ModelConfig\n"
        "from trainer.config import DataConfig, TrainConfig\n"
        "config = TrainConfig(name='base', model=ModelConfig(),\n"
        f"    data=DataConfig(root={str(faces)!r}, validation_identities=20, preload=False),\n"
        "    batch_size=16, lr=0.05, cosface_s=16.0, cosface_m=0.1, warmup_epochs=0.0,\n"
        "    epochs=1, milestones=(), final_lr=None, final_epoch=None, log_every=1,\n"
        "    checkpoint_every=1000, val_every=None)\n"
    )
    command = [sys.executable, "-m", "identify.cli", "ablate", str(config)]
    command += ["--variants", "baseline,cqa", "--branches", "2", "--output", str(tmp_path)]
    command += ["--epochs", "0.2"]
    subprocess.run(command, check=True, timeout=900, capture_output=True)
    rows = [
        line for line in (tmp_path / "ablation.md").read_text().splitlines() if "| base-" in line
    ]
    assert [row.split("|")[1].strip() for row in rows] == [
        "base-baseline",
        "base-cqa",
        "base-cqa-b2",
    ]
    header = next(
        line for line in (tmp_path / "ablation.md").read_text().splitlines() if "| Variant" in line
    )
    columns = [c.strip() for c in header.split("|")[5:-1]]
    for row in rows:  # every metric was measured: numbers in range
        cells = dict(zip(columns, (c.strip() for c in row.split("|")[5:-1]), strict=True))
        accuracy, plus_minus, std = cells["Verification acc."].split()
        assert 0 <= float(accuracy) <= 100 and plus_minus == "+-" and 0 <= float(std) <= 100
        assert 0 <= float(cells["AUC"]) <= 1 and 0 <= float(cells["Masked AUC"]) <= 1
        for name in ("Rank-1", "M2N Rank-1", "M2N Rank-5"):
            assert 0 <= float(cells[name]) <= 100, (name, row)
    model = tmp_path / "base-cqa" / "model.pt"
    before = model.stat().st_mtime_ns
    subprocess.run(command, check=True, timeout=900, capture_output=True)
    assert model.stat().st_mtime_ns == before


def test_a_sweep_trains_every_variant_at_each_value_and_the_base_value_keeps_its_runs() -> None:
    from trainer.ablate import Sweep, plan
    from trainer.config import load_config

    base = replace(load_config("cpu_y1_stage1"), distill_weight=10.0)
    rows = plan(base, ["pretrained", "cqa_gdc"], [], [0, 1], Sweep.parse("distill_weight=10,30"))
    assert [(r.name, r.distill_weight, r.seed) for r in rows] == [
        ("cpu_y1_stage1-pretrained", 10, 0),
        ("cpu_y1_stage1-cqa_gdc", 10, 0),
        ("cpu_y1_stage1-cqa_gdc-seed1", 10, 1),
        ("cpu_y1_stage1-distill_weight30-cqa_gdc", 30, 0),
        ("cpu_y1_stage1-distill_weight30-cqa_gdc-seed1", 30, 1),
    ]
    data = plan(base, ["cqa_gdc"], [], [0], Sweep.parse("data.max_identities=none"))
    assert [(r.name, r.data.max_identities) for r in data] == [
        ("cpu_y1_stage1-max_identitiesnone-cqa_gdc", None)
    ]


def test_each_seed_of_a_later_stage_starts_from_the_earlier_stages_run_of_that_seed() -> None:
    from trainer.ablate import plan
    from trainer.config import load_config

    rows = plan(load_config("cpu_y1_stage2"), ["cqa_gdc"], [], [0, 1, 2])
    assert [(r.name, r.start) for r in rows] == [
        ("cpu_y1_stage2-cqa_gdc", "runs/cpu_y1_stage1-cqa_gdc"),
        ("cpu_y1_stage2-cqa_gdc-seed1", "runs/cpu_y1_stage1-cqa_gdc-seed1"),
        ("cpu_y1_stage2-cqa_gdc-seed2", "runs/cpu_y1_stage1-cqa_gdc-seed2"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("distill_wieght=30", "TrainConfig has no field 'distill_wieght'"),
        ("data.max_ids=10", "DataConfig has no field 'max_ids'"),
        ("distill_weight=", "give FIELD=VALUE[,VALUE...]"),
        ("lr=fast", "--sweep value 'fast': a number or none"),
    ],
)
def test_a_wrong_sweep_is_refused_before_anything_trains(text: str, message: str) -> None:
    from trainer.ablate import Sweep

    with pytest.raises(ValueError, match=re.escape(message)):
        Sweep.parse(text)
