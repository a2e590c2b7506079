"""`cqaface train` (and, as they come, the evaluation commands)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train CQA-Face from a config (preset name or file)")
    p.add_argument("config", help="preset in trainer/configs (e.g. cpu_y1_stage1) or a .py")
    p.add_argument("--output", type=Path, help="runs folder (default: the config's)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start afresh even if the run folder holds checkpoints",
    )
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument(
        "--variant",
        help="train this ablation variant (baseline, cal, qan_ld, cqa, dropout, global) with the "
        "config's stem and budget; the run is named CONFIG-VARIANT",
    )
    p.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    from trainer import data
    from trainer.config import load_config
    from trainer.train import train as run
    from trainer.variants import trainable_model

    config = load_config(args.config)
    overrides = {}
    if args.variant:
        overrides["model"] = trainable_model(config, args.variant)
        overrides["name"] = f"{config.name}-{args.variant}"
    if args.output:
        overrides["output"] = str(args.output)
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    config = config.with_overrides(**overrides)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 validates
    training, augment, teacher = data.training_inputs(config)
    model_path = run(
        config,
        training,
        augment=augment,
        teacher=teacher,
        validator=data.validator(config.data, config.run_dir) if main_process else None,
        resume=args.resume,
        num_workers=args.workers,
    )
    print(f"model written to {model_path}", file=sys.stderr)
    return 0


def register_ablate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ablate", help="train and measure the Table 1 variants and a b sweep at equal budget"
    )
    p.add_argument("config", help="the base config: its data, schedule and budget")
    p.add_argument(
        "--variants",
        default="baseline,cal,qan_ld,cqa",
        help="comma-separated; `pretrained`: a pretrained stem's own network, untrained here",
    )
    p.add_argument("--branches", default="2,4,8", help="b values for the full model")
    p.add_argument("--output", type=Path, help="runs folder (default: the config's)")
    p.add_argument("--epochs", type=float, help="budget per variant (default: the config's)")
    p.add_argument(
        "--seeds", default="", help="train each variant with these seeds (default: the config's)"
    )
    p.add_argument(
        "--sweep",
        metavar="FIELD=V1,V2",
        help="also train every variant at each value of one setting "
        "(e.g. distill_weight=10,30 or data.max_identities=5900,none)",
    )
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.set_defaults(handler=ablate)


def ablate(args: argparse.Namespace) -> int:
    from trainer.ablate import Sweep
    from trainer.ablate import ablate as run
    from trainer.config import load_config

    config = load_config(args.config)
    overrides: dict = {"val_every": None}
    if args.output:
        overrides["output"] = str(args.output)
    if args.epochs:
        overrides["epochs"] = args.epochs
    config = config.with_overrides(**overrides)
    variants = [v for v in args.variants.split(",") if v]
    branches = [int(b) for b in args.branches.split(",") if b]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    sweep = Sweep.parse(args.sweep) if args.sweep else None
    table = run(config, variants, branches, args.workers, seeds, sweep)
    print(table.read_text())
    return 0


def register_mask(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-mask-classifier",
        help="fit the mask-presence classifier of a checkpoint on synthetic masks",
    )
    p.add_argument("config", help="training config whose identity split to use")
    p.add_argument("--train-faces", type=int, default=3000, help="faces of training people")
    p.add_argument("--validation-faces", type=int, default=1000, help="faces of held-out people")
    p.add_argument("--write", action="store_true", help="store it in the checkpoint")
    _common(p)
    p.set_defaults(handler=train_mask)


def train_mask(args: argparse.Namespace) -> int:
    from embedder import checkpoint, settings
    from embedder.mask_classifier import METADATA_KEY
    from trainer import data
    from trainer.config import load_config
    from trainer.mask_training import train_mask_classifier

    config = load_config(args.config).data
    split = data.identity_split(config)
    path = args.model or settings.model_path()
    classifier, report = train_mask_classifier(
        _embedder(args),
        Path(config.root),
        split.train,
        split.validation,
        args.train_faces,
        args.validation_faces,
    )
    if args.write:
        saved = checkpoint.load(path)
        saved.metadata[METADATA_KEY] = classifier.to_metadata(report=report)
        checkpoint.save(saved, path)
    return _report({"mask_classifier": report}, args.out)


def register_eval(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="the paper's evaluation protocols (JSON out)")
    protocols = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")

    q = protocols.add_parser("pairs", help="verification over pairs (LFW style)")
    q.add_argument("--pairs", type=Path, required=True, help="pairs file")
    q.add_argument("--root", type=Path, help="image root (lfw format)")
    q.add_argument(
        "--format",
        choices=["lfw", "listing", "csv"],
        default="lfw",
        help="lfw: ROOT/name/name_%%04d.EXT; listing: i-th file of ROOT/name; csv",
    )
    q.add_argument("--ext", default="jpg", help="image extension for the lfw format")
    q.add_argument("--mask", choices=["none", "one", "both"], default="none")
    _face(q, "default: centre for --format lfw (LFW's protocol), largest otherwise")
    _common(q)
    q.set_defaults(handler=eval_pairs)

    q = protocols.add_parser("identify", help="Rank-k and TAR@FAR against subject templates")
    q.add_argument("--gallery", type=Path, required=True, help="a folder per subject")
    q.add_argument(
        "--probes",
        type=Path,
        help="a folder per subject (default: the gallery's "
        "photos beyond the first --gallery-size of each subject)",
    )
    q.add_argument("--gallery-size", type=int, default=5)
    q.add_argument("--mask-probes", action="store_true", help="synthetic masks on probes (M2N)")
    q.add_argument("--mask", action="store_true", help="masks on probes and gallery (M2M)")
    _face(q, "default: largest, as enrolment takes")
    _common(q)
    q.set_defaults(handler=eval_identify)

    q = protocols.add_parser(
        "attention", help="part qualities and map overlap, bare and masked (CQA heads)"
    )
    q.add_argument("--faces", type=Path, required=True, help="a folder per person (crops/photos)")
    q.add_argument("--per-person", type=int, default=2, help="faces of each person")
    q.add_argument("--people", type=int, default=32, help="the first N people (sorted)")
    q.add_argument("--show", type=int, default=4, help="faces in the --plot picture")
    _common(q)
    q.set_defaults(handler=eval_attention)

    q = protocols.add_parser("calibrate", help="thresholds at FAR 1e-2/1e-3 into a checkpoint")
    q.add_argument("--faces", type=Path, required=True, help="held-out people, a folder each")
    q.add_argument("--write", action="store_true", help="store them in the checkpoint")
    _common(q)
    q.set_defaults(handler=eval_calibrate)


def _face(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--face",
        choices=["centre", "largest"],
        help=f"which face of a raw photo with several to score ({default})",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL/shipped)")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--plot", type=Path, help="ROC (pairs), CMC (identify) or attention maps as a PNG"
    )


def _report(result: dict, out: Path | None) -> int:
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


def _embedder(args: argparse.Namespace):
    from embedder.inference import Embedder

    return Embedder.load(args.model)


def _labelled(folder: Path) -> dict[str, list[Path]]:
    from trainer.pairs import list_identities, list_images

    return {name: list_images(folder / name) for name in list_identities(folder)}


def eval_pairs(args: argparse.Namespace) -> int:
    from trainer import pairs
    from trainer.evaluate import verify_pairs

    if args.format == "csv":
        found = pairs.read_csv_pairs(args.pairs)
    else:
        if args.root is None:
            raise ValueError(f"--root is needed with --format {args.format}")
        resolve = (
            pairs.lfw_resolver(args.root, args.ext)
            if args.format == "lfw"
            else pairs.listing_resolver(args.root)
        )
        found = pairs.read_lfw_pairs(args.pairs, resolve)
    embedder = _embedder(args)
    face = args.face or ("centre" if args.format == "lfw" else "largest")
    result = verify_pairs(embedder, found, mask=args.mask, plot=args.plot, face=face)
    return _report({"model_version": embedder.version, "face": face, **result}, args.out)


def eval_identify(args: argparse.Namespace) -> int:
    from trainer.evaluate import identify

    gallery_sets = _labelled(args.gallery)
    if args.probes:
        gallery = [(p, s) for s, paths in gallery_sets.items() for p in paths]
        probes = [(p, s) for s, paths in _labelled(args.probes).items() for p in paths]
    else:
        n = args.gallery_size
        gallery = [(p, s) for s, paths in gallery_sets.items() for p in paths[:n]]
        probes = [(p, s) for s, paths in gallery_sets.items() for p in paths[n:]]
    embedder = _embedder(args)
    masks = {"mask_gallery": args.mask, "mask_probes": args.mask or args.mask_probes}
    face = args.face or "largest"
    result = identify(embedder, gallery, probes, plot=args.plot, face=face, **masks)
    return _report({"model_version": embedder.version, "face": face, **result}, args.out)


def eval_calibrate(args: argparse.Namespace) -> int:
    from embedder import checkpoint, settings
    from trainer.calibrate import calibrate

    path = args.model or settings.model_path()
    embedder = _embedder(args)
    items = [(p, s) for s, paths in _labelled(args.faces).items() for p in paths]
    thresholds = calibrate(embedder, items)
    if args.write:
        saved = checkpoint.load(path)
        saved.metadata["thresholds"] = {**thresholds, "source": str(args.faces)}
        checkpoint.save(saved, path)
    return _report({"model_version": embedder.version, "thresholds": thresholds}, args.out)


def eval_attention(args: argparse.Namespace) -> int:
    import numpy as np

    from embedder import checkpoint, settings
    from trainer.attention_report import attention_png, attention_report
    from trainer.crops import load_crops

    people = list(_labelled(args.faces).items())[: args.people]
    paths = [p for _, found in people for p in found[: args.per_person]]
    crops, failures = load_crops(paths)
    keys = [str(p) for p in crops]
    stack = np.stack(list(crops.values()))
    model = checkpoint.load(args.model or settings.model_path()).build()
    result = attention_report(model, stack, keys)
    if args.plot:
        attention_png(model, stack[: args.show], keys[: args.show], args.plot)
    result["unusable"] = len(failures)
    return _report(result, args.out)
