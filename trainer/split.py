"""Split a folder-per-identity face set by identity (never by photo) into training and
validation, and draw LFW-style validation pairs, all from one seed.

Splitting by photo would put the same people on both sides and measure memory, not
recognition. Identities that serve elsewhere as test photos (`celeba-photos/`) are forced into
validation so that no model ever trains on them.

Validation pairs follow LFW's View 2: folds hold disjoint identities; each has as many matched
as mismatched pairs, the same count in every fold (the format has one header). That count is as
large as the poorest fold allows (optionally capped); identities are dealt to folds so that
their matched-pair supply is balanced.

    python -m trainer.split DATA/celeba-112 OUT --holdout DATA/celeba-photos \
        --link-validation var/val-faces
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainer.pairs import PairRef, list_identities, list_images, write_lfw_pairs

SPLIT_FILE = "split.json"
PAIRS_FILE = "val_pairs.txt"


@dataclass(frozen=True)
class Split:
    seed: int
    train: list[str]
    validation: list[str]

    def save(self, path: Path, **counts: int) -> None:
        """Write the split as JSON, with its sizes and any further `counts`."""
        sizes = {"train_identities": len(self.train), "validation_identities": len(self.validation)}
        data = {"seed": self.seed, "counts": sizes | counts, **asdict(self)}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Split:
        data = json.loads(Path(path).read_text())
        return cls(seed=data["seed"], train=data["train"], validation=data["validation"])


def make_split(
    names: Sequence[str], *, holdout: Collection[str] = (), n_validation: int = 400, seed: int = 0
) -> Split:
    """`n_validation` identities for validation, every `holdout` one among them; the rest
    train. Deterministic for the seed and the set of names."""
    names = sorted(set(names))
    held = set(holdout)
    missing = sorted(held - set(names))
    if missing:
        raise ValueError(f"{len(missing)} holdout identities are not in the data: {missing[:5]}")
    if len(held) > n_validation or n_validation > len(names):
        raise ValueError(
            f"cannot hold out {len(held)} identities among {n_validation} for validation "
            f"out of {len(names)}"
        )
    rest = [n for n in names if n not in held]
    drawn = np.random.default_rng(seed).choice(len(rest), n_validation - len(held), replace=False)
    validation = held | {rest[i] for i in drawn}
    return Split(seed, [n for n in names if n not in validation], sorted(validation))


def make_pairs(
    files: dict[str, int], *, seed: int = 0, folds: int = 10, max_per_fold: int | None = None
) -> list[list[PairRef]]:
    """LFW-style folds over identities with `files[name]` images each (indices 1-based)."""
    rng = np.random.default_rng(seed)
    assignment = _deal_to_folds(files, folds, rng)
    genuine = [_all_matched(files, fold) for fold in assignment]
    # As many matched as mismatched pairs per fold, and each kind must exist in that number.
    supply = [
        min(len(g), _mismatched_count(files, fold))
        for g, fold in zip(genuine, assignment, strict=True)
    ]
    per_fold = min(supply)
    if max_per_fold is not None:
        per_fold = min(per_fold, max_per_fold)
    if per_fold == 0:
        raise ValueError(
            f"too few identities with two images or more to fill {folds} folds "
            "with matched and mismatched pairs"
        )
    return [
        sorted(_sample(g, per_fold, rng) + _mismatched(files, fold, per_fold, rng), key=_order)
        for g, fold in zip(genuine, assignment, strict=True)
    ]


def write_split(
    root: Path,
    out_dir: Path,
    *,
    holdout: Collection[str] = (),
    n_validation: int = 400,
    seed: int = 0,
    folds: int = 10,
    max_per_fold: int | None = None,
) -> Split:
    """Split `root`, then write `split.json` and the validation pairs `val_pairs.txt` (LFW
    format, indices into each identity's sorted listing: `pairs.listing_resolver(root)`)."""
    split = make_split(list_identities(root), holdout=holdout, n_validation=n_validation, seed=seed)
    counts = {name: len(list_images(Path(root) / name)) for name in split.validation}
    pairs = make_pairs(counts, seed=seed, folds=folds, max_per_fold=max_per_fold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_lfw_pairs(out_dir / PAIRS_FILE, pairs)
    split.save(
        out_dir / SPLIT_FILE,
        validation_images=sum(counts.values()),
        folds=folds,
        pairs_per_fold=len(pairs[0]) // 2,
    )
    return split


def link_validation(root: Path, split: Split, out_dir: Path) -> None:
    """A folder per validation identity, linked to `root`'s: the held-out people as a folder
    that `cqaface eval calibrate --faces` and `eval identify --gallery` read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in split.validation:
        link = out_dir / name
        if not link.is_symlink():
            link.symlink_to((Path(root) / name).resolve(), target_is_directory=True)


def _deal_to_folds(files: dict[str, int], folds: int, rng: np.random.Generator) -> list[list[str]]:
    """Largest matched-pair supply first, each to the fold with the least so far."""
    names = sorted(files)
    order = rng.permutation(len(names))
    ranked = sorted((names[i] for i in order), key=lambda n: -_matched_count(files[n]))
    assignment: list[list[str]] = [[] for _ in range(folds)]
    supply = [0] * folds
    for name in ranked:
        k = supply.index(min(supply))
        assignment[k].append(name)
        supply[k] += _matched_count(files[name])
    return [sorted(fold) for fold in assignment]


def _matched_count(n: int) -> int:
    return n * (n - 1) // 2


def _mismatched_count(files: dict[str, int], fold: list[str]) -> int:
    total = sum(files[name] for name in fold)
    return _matched_count(total) - sum(_matched_count(files[name]) for name in fold)


def _all_matched(files: dict[str, int], fold: list[str]) -> list[PairRef]:
    return [
        PairRef(name, i, name, j)
        for name in fold
        for i, j in itertools.combinations(range(1, files[name] + 1), 2)
    ]


def _sample(refs: list[PairRef], count: int, rng: np.random.Generator) -> list[PairRef]:
    return [refs[i] for i in rng.choice(len(refs), count, replace=False)]


def _mismatched(
    files: dict[str, int], fold: list[str], count: int, rng: np.random.Generator
) -> list[PairRef]:
    """`count` distinct pairs of images of two different people, uniform over images."""
    images = [(name, i) for name in fold for i in range(1, files[name] + 1)]
    chosen: dict[tuple[int, int], None] = {}  # insertion-ordered, for determinism
    while len(chosen) < count:
        a, b = np.sort(rng.integers(0, len(images), (2 * count, 2)), axis=1).T
        for i, j in zip(a.tolist(), b.tolist(), strict=True):
            if images[i][0] != images[j][0] and len(chosen) < count:
                chosen[i, j] = None
    return [PairRef(*images[i], *images[j]) for i, j in chosen]


def _order(ref: PairRef) -> tuple[bool, str, int, str, int]:
    return (not ref.same, ref.name1, ref.index1, ref.name2, ref.index2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="aligned crops, one folder per identity")
    parser.add_argument("out", type=Path, help=f"where to write {SPLIT_FILE} and {PAIRS_FILE}")
    parser.add_argument("--holdout", type=Path, help="a folder whose identities must validate")
    parser.add_argument("--validation", type=int, default=400, help="validation identities")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--max-pairs-per-fold", type=int)
    parser.add_argument(
        "--link-validation", type=Path, help="also link each validation identity's folder here"
    )
    args = parser.parse_args(argv)
    split = write_split(
        args.root,
        args.out,
        holdout=list_identities(args.holdout) if args.holdout else (),
        n_validation=args.validation,
        seed=args.seed,
        folds=args.folds,
        max_per_fold=args.max_pairs_per_fold,
    )
    if args.link_validation:
        link_validation(args.root, split, args.link_validation)
    print(
        f"{len(split.train)} training, {len(split.validation)} validation identities -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
