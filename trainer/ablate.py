"""`cqaface ablate`: the paper's Table 1 variants and a sweep of b, trained with the same
budget (the base config's schedule, only the model changes) and measured the same way.

Each variant trains in `OUTPUT/<config>-<label>`, exactly as `cqaface train CONFIG --variant`
names its run, so a run trained by hand counts as that variant's; a variant whose run already
holds its final model is measured, not retrained, and an interrupted one resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from embedder.config import variant
from embedder.inference import Embedder
from trainer import data
from trainer.config import TrainConfig
from trainer.report import validation_report
from trainer.train import train

TABLE_1 = ("baseline", "cal", "qan_ld", "cqa")
BRANCHES = (2, 4, 8)


def plan(base: TrainConfig, variants: Sequence[str], branches: Sequence[int]) -> list[TrainConfig]:
    """One config per row: each Table 1 variant, then the full model for each other b."""
    stem = base.model.stem
    rows = [replace(base, name=f"{base.name}-{v}", model=variant(v, stem=stem)) for v in variants]
    for b in branches:
        if b == variant("cqa").branches and "cqa" in variants:
            continue  # the full model at the default b is already a row
        model = variant("cqa", stem=stem, branches=b)
        rows.append(replace(base, name=f"{base.name}-cqa-b{b}", model=model))
    return rows


def run_variant(config: TrainConfig, num_workers: int = 0) -> dict[str, Any]:
    model_path = config.run_dir / "model.pt"
    if not model_path.is_file():
        training = data.training_set(config.data)
        teacher = data.teacher(config.data, training) if config.distill_weight else None
        train(
            config,
            training,
            augment=data.augmentation(config.data),
            num_workers=num_workers,
            teacher=teacher,
        )
    result_file = config.run_dir / "report.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    embedder = Embedder.load(model_path)
    result = validation_report(embedder, config.data, config.run_dir / "split")
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


# (header, cell) per metric column: the figures the model card quotes for each variant.
_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("Verification acc.", lambda r: _accuracy(r["verification"])),
    ("AUC", lambda r: f"{r['verification']['auc']:.3f}"),
    ("TAR@FAR=1e-2", lambda r: _pct(r["verification"]["tar_at_far"].get("0.01"))),
    ("TAR@FAR=1e-3", lambda r: _pct(r["verification"]["tar_at_far"].get("0.001"))),
    ("Masked acc.", lambda r: _accuracy(r["masked_verification"])),
    ("Masked AUC", lambda r: f"{r['masked_verification']['auc']:.3f}"),
    ("Rank-1", lambda r: _pct(r["identification"]["rank1"])),
    ("M2N Rank-1", lambda r: _pct(r["m2n"]["rank1"])),
    ("M2N Rank-5", lambda r: _pct(r["m2n"]["rank5"])),
    ("M2N TAR@FAR=1e-2", lambda r: _pct(r["m2n"]["tar_at_far"].get("0.01"))),
)


def markdown(rows: Sequence[tuple[TrainConfig, dict[str, Any]]]) -> str:
    headers = ["Variant", "QAN", "Diversity", "b"] + [h for h, _ in _COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for config, r in rows:
        m = config.model
        cells = [config.name, "yes" if m.qan else "no", m.diversity, str(m.branches)]
        lines.append("| " + " | ".join(cells + [cell(r) for _, cell in _COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def _accuracy(result: dict[str, Any]) -> str:
    return f"{_pct(result['accuracy'])} +- {_pct(result['accuracy_std'])}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def ablate(
    base: TrainConfig,
    variants: Sequence[str] = TABLE_1,
    branches: Sequence[int] = BRANCHES,
    num_workers: int = 0,
) -> Path:
    """Trains and measures every row; writes ablation.md and ablation.json in the output."""
    rows = [(c, run_variant(c, num_workers)) for c in plan(base, variants, branches)]
    out = Path(base.output)
    (out / "ablation.json").write_text(json.dumps({c.name: r for c, r in rows}, indent=2) + "\n")
    table = out / "ablation.md"
    budget = f"{base.epochs:g} epochs of {base.data.root}, batch {base.batch_size}"
    table.write_text(f"# Ablation at equal budget: {budget}\n\n" + markdown(rows))
    return table
