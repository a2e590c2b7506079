"""`cqaface ablate`: the paper's Table 1 variants and a sweep of b, trained with the same
budget (the base config's schedule, only the model changes) and measured the same way.

Each variant trains in `OUTPUT/<config>-<label>`, exactly as `cqaface train CONFIG --variant`
names its run, so a run trained by hand counts as that variant's; a variant whose run already
holds its final model is measured, not retrained, and an interrupted one resumes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedder import checkpoint as ckpt
from embedder import pretrained
from embedder.config import ModelConfig, variant
from embedder.inference import Embedder
from embedder.model import build_model
from trainer import data
from trainer.config import DataConfig, TrainConfig
from trainer.frozen_stem import SharedStemEmbedder, StemMaps
from trainer.report import validation_report
from trainer.train import train
from trainer.variants import PRETRAINED, variant_model

TABLE_1 = ("baseline", "cal", "qan_ld", "cqa")
BRANCHES = (2, 4, 8)


def _row(base: TrainConfig, label: str, model: ModelConfig, seed: int) -> TrainConfig:
    """A later stage's row starts from the earlier stage's run of the same seed: `start` names
    the base seed's run, and the other seeds' runs carry the same suffix as their own names."""
    suffix = "" if seed == base.seed else f"-seed{seed}"
    extra = {**base.extra, "untrained": label == PRETRAINED}
    start = base.start and base.start + suffix
    name = f"{base.name}-{label}{suffix}"
    return replace(base, name=name, model=model, seed=seed, extra=extra, start=start)


@dataclass(frozen=True)
class Sweep:
    """One training setting tried at several values beside the variants (`--sweep
    distill_weight=10,30`, `--sweep data.max_identities=5900,none`): why a head loses to its
    stem's own is a question of such settings, and each answer is a row of the same table."""

    field: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Sweep:
        field, _, values = text.partition("=")
        owner, name = _owner(field)
        if name not in {f.name for f in fields(owner)}:
            raise ValueError(f"--sweep {text!r}: {owner.__name__} has no field {name!r}")
        listed = tuple(v.strip() for v in values.split(",") if v.strip())
        if not listed:
            raise ValueError(f"--sweep {text!r}: give FIELD=VALUE[,VALUE...]")
        for value in listed:
            _value(value)
        return cls(field, listed)

    def points(self, base: TrainConfig) -> list[TrainConfig]:
        """The base at each value; a value equal to the base's keeps its run names, so a run
        trained without the sweep counts as that point's."""
        owner, name = _owner(self.field)
        configs = []
        for text in self.values:
            value = _value(text)
            if value == getattr(base.data if owner is DataConfig else base, name):
                configs.append(base)
                continue
            in_data = owner is DataConfig
            change = {"data": replace(base.data, **{name: value})} if in_data else {name: value}
            configs.append(replace(base, name=f"{base.name}-{name}{text}", **change))
        return configs


def _owner(field: str) -> tuple[type, str]:
    return (DataConfig, field[5:]) if field.startswith("data.") else (TrainConfig, field)


def _value(text: str) -> int | float | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--sweep value {text!r}: a number or none") from None


def plan(
    base: TrainConfig,
    variants: Sequence[str],
    branches: Sequence[int],
    seeds: Sequence[int] = (),
    sweep: Sweep | None = None,
) -> list[TrainConfig]:
    """One config per row and seed: each variant, then the full model for each other b, at
    each point of the sweep. The base's own seed keeps the plain run name, so earlier
    single-seed runs count; the untrained network is one row whatever the sweep."""
    seeds = seeds or (base.seed,)
    rows = []
    if PRETRAINED in variants:
        rows.append(_row(base, PRETRAINED, variant_model(base, PRETRAINED), seeds[0]))
    for point in sweep.points(base) if sweep else [base]:
        for v in (v for v in variants if v != PRETRAINED):
            model = variant_model(point, v)
            rows += [_row(point, v, model, s) for s in seeds]
        for b in branches:
            if b == variant("cqa").branches and "cqa" in variants:
                continue  # the full model at the default b is already a row
            model = variant("cqa", stem=point.model.stem, branches=b)
            rows += [_row(point, f"cqa-b{b}", model, s) for s in seeds]
    return rows


def run_variant(
    config: TrainConfig, num_workers: int = 0, maps: StemMaps | None = None
) -> dict[str, Any]:
    """Trains the row unless its run holds the final model; measures it unless measured. Heads
    on one frozen stem (stage 1) share its maps through `maps`: each face's stem pass runs once
    a table."""
    model_path = config.run_dir / "model.pt"
    if not model_path.is_file():
        if config.extra.get("untrained"):
            _save_pretrained(config, model_path)
        else:
            training, augment, teacher = data.training_inputs(config)
            train(config, training, augment=augment, num_workers=num_workers, teacher=teacher)
    result_file = config.run_dir / "report.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    checkpoint = ckpt.load(model_path)
    if maps is not None and (config.data.maps or config.init):
        embedder: Embedder = SharedStemEmbedder.from_checkpoint(checkpoint, maps=maps)
    else:
        embedder = Embedder.from_checkpoint(checkpoint)
    result = validation_report(embedder, config.data, config.run_dir / "split")
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _save_pretrained(config: TrainConfig, path: Path) -> None:
    model = build_model(config.model)
    pretrained.load_into(model, config.init)
    metadata = {"training": {"config": config.name, "steps": 0, "init": config.init}}
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save(ckpt.from_model(model.eval(), metadata), path)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


# (header, value) per metric column: the figures the model card quotes for each variant.
_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("Verification acc.", lambda r: _pct(r["verification"]["accuracy"])),
    ("AUC", lambda r: r["verification"]["auc"]),
    ("TAR@FAR=1e-2", lambda r: _pct(r["verification"]["tar_at_far"].get("0.01"))),
    ("TAR@FAR=1e-3", lambda r: _pct(r["verification"]["tar_at_far"].get("0.001"))),
    ("Masked acc.", lambda r: _pct(r["masked_verification"]["accuracy"])),
    ("Masked AUC", lambda r: r["masked_verification"]["auc"]),
    ("Rank-1", lambda r: _pct(r["identification"]["rank1"])),
    ("M2N Rank-1", lambda r: _pct(r["m2n"]["rank1"])),
    ("M2N Rank-5", lambda r: _pct(r["m2n"]["rank5"])),
    ("M2N TAR@FAR=1e-2", lambda r: _pct(r["m2n"]["tar_at_far"].get("0.01"))),
    ("Photos Rank-1", lambda r: _pct(r.get("photos", {}).get("rank1"))),
    ("Photos M2N Rank-1", lambda r: _pct(r.get("photos_m2n", {}).get("rank1"))),
)
# Within one model, accuracy's spread is over the 10 folds; across seeds, over the seeds.
_FOLD_STD = {"Verification acc.": "verification", "Masked acc.": "masked_verification"}


def markdown(rows: Sequence[tuple[TrainConfig, dict[str, Any]]]) -> str:
    """A row per variant; a variant trained with several seeds shows mean +- std over them."""
    headers = ["Variant", "QAN", "Diversity", "b"] + [h for h, _ in _COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, group in _by_variant(rows).items():
        m = group[0][0].model
        seeds = sorted(c.seed for c, _ in group)
        label = name if len(group) == 1 else f"{name} (seeds {', '.join(map(str, seeds))})"
        branches = str(m.branches) if m.head == "cqa" else "-"
        cells = [label, "yes" if m.qan else "no", m.diversity, branches]
        results = [r for _, r in group]
        lines.append("| " + " | ".join(cells + [_cell(h, f, results) for h, f in _COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def _by_variant(
    rows: Sequence[tuple[TrainConfig, dict[str, Any]]],
) -> dict[str, list[tuple[TrainConfig, dict[str, Any]]]]:
    groups: dict[str, list[tuple[TrainConfig, dict[str, Any]]]] = {}
    for config, result in rows:
        groups.setdefault(re.sub(r"-seed\d+$", "", config.name), []).append((config, result))
    return groups


def _cell(header: str, value: Callable[[dict[str, Any]], float | None], results: list) -> str:
    values = [value(r) for r in results]
    if any(v is None for v in values):
        return "n/a"
    digits = 3 if "AUC" in header else 2
    mean = float(np.mean(values))
    if len(values) > 1:
        return f"{mean:.{digits}f} +- {float(np.std(values, ddof=1)):.{digits}f}"
    if header in _FOLD_STD:
        return f"{mean:.2f} +- {100 * results[0][_FOLD_STD[header]]['accuracy_std']:.2f}"
    return f"{mean:.{digits}f}"


def ablate(
    base: TrainConfig,
    variants: Sequence[str] = TABLE_1,
    branches: Sequence[int] = BRANCHES,
    num_workers: int = 0,
    seeds: Sequence[int] = (),
    sweep: Sweep | None = None,
) -> Path:
    """Trains and measures every row; writes ablation.md and ablation.json in the output."""
    maps = StemMaps()
    configs = plan(base, variants, branches, seeds, sweep)
    rows = [(c, run_variant(c, num_workers, maps)) for c in configs]
    out = Path(base.output)
    (out / "ablation.json").write_text(json.dumps({c.name: r for c, r in rows}, indent=2) + "\n")
    table = out / "ablation.md"
    budget = f"{base.epochs:g} epochs of {base.data.root}, batch {base.batch_size}"
    table.write_text(f"# Ablation at equal budget: {budget}\n\n" + markdown(rows))
    return table
