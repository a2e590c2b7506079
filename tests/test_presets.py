"""Every training preset in trainer/configs loads, is named after its file, and says what its
docstring promises; a preset that no test loads cannot rot unseen."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import CONFIG_DIR, TrainConfig, load_config

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def test_the_presets_are_the_shipped_recipe_the_w600k_stem_and_the_papers() -> None:
    assert PRESETS == [
        "cpu_w600k_stage1",
        "cpu_y1_stage1",
        "cpu_y1_stage2",
        "paper_ms1mv2_r100",
        "paper_vggface2_r100",
    ]


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_loads_by_name_and_is_named_after_its_file(name: str) -> None:
    config = load_config(name)
    assert isinstance(config, TrainConfig)
    assert config.name == name
    assert config.run_dir == Path("runs") / name


def test_an_unknown_preset_is_refused_with_the_list_of_presets() -> None:
    with pytest.raises(
        ValueError,
        match="no training config 'cpu_celeba_compact'; presets: cpu_w600k_stage1, cpu_y1",
    ):
        load_config("cpu_celeba_compact")


@pytest.mark.parametrize(
    ("name", "data", "epochs", "milestones"),
    [
        ("paper_vggface2_r100", "vggface2", 12, (7, 10)),
        ("paper_ms1mv2_r100", "ms1mv2", 24, (13, 19)),
    ],
)
def test_the_paper_presets_follow_its_schedules(
    name: str, data: str, epochs: int, milestones: tuple[int, int], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CQAFACE_SHARED_DATA", str(tmp_path))
    config = load_config(name)
    assert config.model.stem == "r100"
    assert config.data.root == str(tmp_path / data / "train.rec")
    assert (config.batch_size, config.lr, config.epochs) == (256, 0.03, epochs)
    assert config.milestones == milestones and config.final_lr == 1e-4


def test_stage_2_fine_tunes_stage_1s_run_of_the_shipped_head(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CQAFACE_SHARED_MODELS", str(tmp_path))
    stage1, stage2 = load_config("cpu_y1_stage1"), load_config("cpu_y1_stage2")
    assert stage1.model.stem == "mobilefacenet_y1" and stage1.model.part_pooling == "gdc"
    assert stage1.init == str(tmp_path / "insightface-mobilefacenet-y1" / "model-0000.params")
    assert (stage1.distill_weight, stage1.data.mask_maps, stage1.data.train_on_maps) == (
        100.0,
        0.75,
        True,
    )
    assert stage2.model == stage1.model
    assert stage2.start == str(Path("runs") / "cpu_y1_stage1-cqa_gdc")
    assert (stage2.data.train_on_maps, stage2.data.mask, stage2.freeze_stem_bn) == (
        False,
        0.5,
        True,
    )
    assert (stage2.lr, stage2.epochs, stage2.micro_batches) == (0.005, 1, 8)
