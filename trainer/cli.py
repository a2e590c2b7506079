"""`cqaface train` (and, as they come, the evaluation commands)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train CQA-Face from a config (preset name or file)")
    p.add_argument("config", help="preset in trainer/configs (e.g. cpu_celeba_compact) or a .py")
    p.add_argument("--output", type=Path, help="runs folder (default: the config's)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start afresh even if the run folder holds checkpoints",
    )
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    from trainer import data
    from trainer.config import load_config
    from trainer.train import train as run

    config = load_config(args.config)
    overrides = {}
    if args.output:
        overrides["output"] = str(args.output)
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    config = config.with_overrides(**overrides)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 validates
    model_path = run(
        config,
        data.training_set(config.data),
        augment=data.augmentation(config.data),
        validator=data.validator(config.data, config.run_dir) if main_process else None,
        resume=args.resume,
        num_workers=args.workers,
    )
    print(f"model written to {model_path}", file=sys.stderr)
    return 0
