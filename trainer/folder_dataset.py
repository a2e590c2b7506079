"""A torch Dataset over aligned 112x112 crops stored one folder per identity:
`ROOT/<identity>/<image>` (celeba-112 is such a tree of WebP crops).

Raw photos are refused, not aligned on the fly: alignment runs a detector, which belongs in a
one-off `cqaface align SRC DST`, not in every epoch. Decoding is cheap per image but, on a few
CPU cores, costs more than the model per epoch; `preload=True` decodes every crop once into
one uint8 array (62k crops: 2.3 GB), which DataLoader workers share copy-on-write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from embedder.inference import INPUT_SIZE, preprocess
from trainer.pairs import list_identities, list_images

# Augmentation hook: uint8 HxWx3 RGB in, uint8 HxWx3 RGB out.
Transform = Callable[[np.ndarray], np.ndarray]


class NotAlignedError(ValueError):
    """An image that is not an aligned 112x112 crop."""


def decode_crop(data: bytes | np.ndarray, source: object) -> np.ndarray:
    """Encoded image bytes -> uint8 112x112x3 RGB; `source` names it in errors."""
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{source}: not a readable image")
    _check_size(bgr.shape[1], bgr.shape[0], source)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def crop_to_tensor(crop: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float 3x112x112 scaled (x/255-0.5)/0.5, exactly as at inference."""
    return torch.from_numpy(preprocess(np.ascontiguousarray(crop))[0])


class FolderDataset(Dataset[tuple[torch.Tensor | np.ndarray, int]]):
    """(crop tensor, label) over `ROOT/<identity>/<image>`, labels 0..K-1 by sorted identity.

    `identities` restricts it to a split (labels then count within that list); `transform`
    augments the uint8 crop before it becomes a tensor. `tensors=False` gives the uint8 crop
    itself, for loops that augment, batch and scale on their own (trainer.train).
    `max_per_identity` keeps each identity's first images (by name): a cap on the few people
    with many photos, when every extra face costs a stem pass.
    """

    def __init__(
        self,
        root: Path,
        identities: Sequence[str] | None = None,
        *,
        transform: Transform | None = None,
        preload: bool = False,
        workers: int = 1,
        tensors: bool = True,
        max_per_identity: int | None = None,
    ) -> None:
        root = Path(root)
        available = list_identities(root)
        self.identities = sorted(set(identities)) if identities is not None else available
        missing = sorted(set(self.identities) - set(available))
        if missing:
            raise ValueError(f"{len(missing)} identities are not folders of {root}: {missing[:5]}")
        self.paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(self.identities):
            files = list_images(root / name)[:max_per_identity]
            self.paths += files
            labels += [label] * len(files)
        if not self.paths:
            raise ValueError(f"no images under {root} for {len(self.identities)} identities")
        self.labels = np.array(labels, np.int64)
        self.transform = transform
        self.tensors = tensors
        _probe(self.paths[0])  # raw photos fail here, before any long preload
        self._crops = self._decode_all(workers) if preload else None

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def __len__(self) -> int:
        return len(self.paths)

    def crop(self, index: int) -> np.ndarray:
        """The decoded uint8 crop, before any transform."""
        if self._crops is not None:
            return self._crops[index]
        return decode_crop(np.fromfile(self.paths[index], np.uint8), self.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, int]:
        crop = self.crop(index)
        if self.transform is not None:
            crop = self.transform(crop)
        return crop_to_tensor(crop) if self.tensors else crop, int(self.labels[index])

    def _decode_all(self, workers: int) -> np.ndarray:
        crops = np.empty((len(self.paths), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)

        def decode(index: int) -> None:
            crops[index] = decode_crop(np.fromfile(self.paths[index], np.uint8), self.paths[index])

        # cv2 releases the GIL while decoding, so threads scale.
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(decode, range(len(self.paths))))
        crops.flags.writeable = False  # crop() hands out views: none may alter the cache
        return crops


def _probe(path: Path) -> None:
    """Check an image's size from its header alone."""
    with Image.open(path) as image:
        _check_size(*image.size, path)


def _check_size(width: int, height: int, source: object) -> None:
    if (width, height) != (INPUT_SIZE, INPUT_SIZE):
        raise NotAlignedError(
            f"{source} is {width}x{height}, not an aligned {INPUT_SIZE}x{INPUT_SIZE} crop: "
            "align the photos first (cqaface align SRC DST) and train on DST"
        )
