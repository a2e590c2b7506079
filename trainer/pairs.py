"""Verification pairs: LFW's `pairs.txt` format exactly as published, and a plain CSV.

LFW format (tab- or space-separated)::

    10	300                  folds, pairs per fold (pairsDevTrain.txt: one number, one fold)
    Abel_Pacheco	1	4         per fold: `pairs per fold` matched lines `name i j`,
    ...
    Abdel_Madi_Shabneh	1	Dean_Barker	1   then as many mismatched lines `name1 i name2 j`

An image is named by its person and a 1-based index; a resolver turns (name, index) into a
path. LFW stores `ROOT/name/name_%04d.jpg` (`lfw_resolver`). Folders whose files follow no such
naming (our CelebA crops) use `listing_resolver`: index i is the i-th file of the sorted listing
of `ROOT/name` (`list_images`), so a pairs file written for a folder tree keeps meaning as long
as that tree is unchanged.

CSV format: a header `path1,path2,same` (optionally `,fold`), paths relative to the CSV's folder
unless absolute, `same` as 1/0 or true/false.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from embedder.align_tree import IMAGE_SUFFIXES

Resolver = Callable[[str, int], Path]


class PairsFormatError(ValueError):
    """A pairs file that does not follow its format; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    path1: Path
    path2: Path
    same: bool
    fold: int


@dataclass(frozen=True)
class PairRef:
    """One line of an LFW pairs file: two (name, 1-based index) images."""

    name1: str
    index1: int
    name2: str
    index2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def list_identities(root: Path) -> list[str]:
    """The identity folders under `root`, sorted."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def list_images(folder: Path) -> list[Path]:
    """The image files of one identity's folder, sorted by name: what an index counts in."""
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
    )


def lfw_resolver(root: Path, ext: str = "jpg") -> Resolver:
    """LFW's own naming: `ROOT/name/name_0001.jpg`."""
    return lambda name, index: Path(root) / name / f"{name}_{index:04d}.{ext}"


def listing_resolver(root: Path) -> Resolver:
    """Index i is the i-th (1-based) image of `list_images(ROOT/name)`."""
    listings: dict[str, list[Path]] = {}

    def resolve(name: str, index: int) -> Path:
        if name not in listings:
            folder = Path(root) / name
            listings[name] = list_images(folder) if folder.is_dir() else []
        files = listings[name]
        if not 1 <= index <= len(files):
            raise LookupError(f"{name!r} has {len(files)} images in {root}, no image {index}")
        return files[index - 1]

    return resolve


def parse_lfw_pairs(path: Path) -> list[list[PairRef]]:
    """The folds of an LFW pairs file, each with its matched then mismatched pairs."""
    folds: list[list[PairRef]] = []
    for fold, _, ref in _parse(path):
        if fold == len(folds):
            folds.append([])
        folds[fold].append(ref)
    return folds


def read_lfw_pairs(path: Path, resolve: Resolver) -> list[Pair]:
    """Pairs of an LFW pairs file with paths from `resolve` (folds numbered from 0)."""
    pairs = []
    for fold, number, ref in _parse(path):
        try:
            paths = resolve(ref.name1, ref.index1), resolve(ref.name2, ref.index2)
        except LookupError as error:
            raise PairsFormatError(f"{path}:{number}: {error}") from error
        pairs.append(Pair(paths[0], paths[1], ref.same, fold))
    return pairs


def write_lfw_pairs(path: Path, folds: Sequence[Sequence[PairRef]]) -> None:
    """Write folds of pairs in LFW's format. The format has one header for all folds: each
    needs the same number n of matched and n of mismatched pairs."""
    sizes = {len(fold) for fold in folds}
    balanced = all(2 * sum(ref.same for ref in fold) == len(fold) for fold in folds)
    if len(sizes) != 1 or not balanced:
        raise ValueError("every fold needs the same n matched and n mismatched pairs")
    lines = [f"{len(folds)}\t{len(folds[0]) // 2}"]
    for fold in folds:
        lines += [_format_line(ref) for ref in sorted(fold, key=lambda r: not r.same)]
    Path(path).write_text("\n".join(lines) + "\n")


def read_csv_pairs(path: Path) -> list[Pair]:
    """Pairs of a CSV `path1,path2,same[,fold]`; relative paths are from the CSV's folder."""
    base = Path(path).parent
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[:3] != ["path1", "path2", "same"]:
            raise PairsFormatError(f"{path}:1: expected the header 'path1,path2,same[,fold]'")
        has_fold = header[3:] == ["fold"]
        pairs = []
        for row in reader:
            if row:
                pairs.append(_csv_pair(path, reader.line_num, row, base, has_fold))
    return pairs


def write_csv_pairs(path: Path, pairs: Sequence[Pair]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path1", "path2", "same", "fold"])
        for p in pairs:
            writer.writerow([p.path1, p.path2, int(p.same), p.fold])


def _parse(path: Path) -> list[tuple[int, int, PairRef]]:
    """(fold, line number, pair) for every pair line, checked against the header."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise PairsFormatError(f"{path}:1: empty file, expected a header 'folds pairs_per_fold'")
    folds, per_fold = _header(path, lines[0])
    body = [(number, line) for number, line in enumerate(lines[1:], 2) if line.strip()]
    if len(body) != folds * 2 * per_fold:
        raise PairsFormatError(
            f"{path}: the header announces {folds} folds x 2 x {per_fold} pairs = "
            f"{folds * 2 * per_fold} lines, the file has {len(body)}"
        )
    parsed = []
    for position, (number, line) in enumerate(body):
        fold, within = divmod(position, 2 * per_fold)
        parsed.append((fold, number, _parse_line(path, number, line, within < per_fold)))
    return parsed


def _header(path: Path, line: str) -> tuple[int, int]:
    fields = line.split()
    if len(fields) == 1 and _decimal(fields[0]):  # pairsDevTrain.txt / pairsDevTest.txt
        return 1, int(fields[0])
    if len(fields) == 2 and all(_decimal(f) for f in fields):
        return int(fields[0]), int(fields[1])
    raise PairsFormatError(f"{path}:1: expected 'folds pairs_per_fold', got {line!r}")


def _parse_line(path: Path, number: int, line: str, matched: bool) -> PairRef:
    fields = line.split()
    expected = "'name i j'" if matched else "'name1 i name2 j'"
    try:
        if matched and len(fields) == 3:
            ref = PairRef(fields[0], int(fields[1]), fields[0], int(fields[2]))
        elif not matched and len(fields) == 4:
            ref = PairRef(fields[0], int(fields[1]), fields[2], int(fields[3]))
        else:
            raise ValueError
    except ValueError:
        kind = "matched" if matched else "mismatched"
        raise PairsFormatError(
            f"{path}:{number}: expected a {kind} pair {expected}, got {line!r}"
        ) from None
    if min(ref.index1, ref.index2) < 1:
        raise PairsFormatError(f"{path}:{number}: image indices start at 1, got {line!r}")
    if not matched and ref.same:
        raise PairsFormatError(f"{path}:{number}: a mismatched pair names one person twice")
    return ref


def _decimal(text: str) -> bool:
    """ASCII digits: str.isdigit() also holds for "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def _format_line(ref: PairRef) -> str:
    for name in (ref.name1, ref.name2):
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"LFW pairs files cannot hold the name {name!r}")
    if ref.same:
        return f"{ref.name1}\t{ref.index1}\t{ref.index2}"
    return f"{ref.name1}\t{ref.index1}\t{ref.name2}\t{ref.index2}"


def _csv_pair(path: Path, number: int, row: list[str], base: Path, has_fold: bool) -> Pair:
    width = 4 if has_fold else 3
    same = row[2].strip().lower() if len(row) == width else ""
    if same not in ("0", "1", "true", "false") or (has_fold and not _decimal(row[3])):
        raise PairsFormatError(f"{path}:{number}: expected 'path1,path2,same[,fold]', got {row}")
    return Pair(
        base / row[0],
        base / row[1],
        same in ("1", "true"),
        int(row[3]) if has_fold else 0,
    )
