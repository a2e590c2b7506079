"""The `cqaface` command: one entry point whose subcommands come from each package."""

from __future__ import annotations

import argparse
import sys

from embedder import cli as embedder_cli
from identify import cli_identify, cli_web
from trainer import cli as trainer_cli
from workers import cli as workers_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cqaface", description="CQA-Face Identify: face embedding and identification."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embedder_cli.register(commands)
    trainer_cli.register(commands)
    trainer_cli.register_eval(commands)
    cli_identify.register(commands)
    cli_web.register(commands)
    workers_cli.register(commands)
    trainer_cli.register_mask(commands)
    trainer_cli.register_ablate(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from embedder.checkpoint import CheckpointError  # after parsing: `--help` needs no torch

    try:
        return args.handler(args)
    except (CheckpointError, NotADirectoryError, LookupError, ValueError) as error:
        print(f"cqaface {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
