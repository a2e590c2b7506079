"""insightface's verification `.bin` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...): a pickle of
`(images, issame)`, where `images` lists 2N encoded images (pair k is images 2k and 2k+1) and
`issame` lists N booleans.

Pickles can run code when loaded, and these files come from the internet: the reader admits
no global at all (no class, no function), only the builtin containers, bytes and bools, and
checks the shape of what it got before returning it.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.folder_dataset import decode_crop


class VerificationBinError(ValueError):
    """A .bin file that is not a (images, issame) pickle of plain bytes and bools."""


@dataclass(frozen=True)
class VerificationPairs:
    images: list[bytes]  # 2N encoded images
    issame: list[bool]  # N

    def crops(self) -> np.ndarray:
        """All images decoded: uint8 (2N, 112, 112, 3) RGB, pair k at rows 2k and 2k+1."""
        return np.stack([decode_crop(image, f"image {k}") for k, image in enumerate(self.images)])


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        raise VerificationBinError(f"refusing a pickle that loads {module}.{name}")


def load_verification_bin(path: Path) -> VerificationPairs:
    """Read a .bin safely (see the module docstring); raises VerificationBinError."""
    try:
        # encoding="bytes": files written by Python 2 hold str images, which must stay bytes.
        data = _NoGlobals(io.BytesIO(Path(path).read_bytes()), encoding="bytes").load()
    except VerificationBinError:
        raise
    except Exception as error:
        raise VerificationBinError(f"{path}: not a readable pickle ({error})") from error
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise VerificationBinError(f"{path}: expected a pair (images, issame)")
    images, issame = data
    if not isinstance(images, list | tuple) or not all(isinstance(i, bytes) for i in images):
        raise VerificationBinError(f"{path}: the images must be a list of encoded image bytes")
    if not isinstance(issame, list | tuple) or not all(isinstance(s, bool) for s in issame):
        raise VerificationBinError(f"{path}: issame must be a list of booleans")
    if len(images) != 2 * len(issame):
        raise VerificationBinError(
            f"{path}: {len(images)} images for {len(issame)} pairs, expected {2 * len(issame)}"
        )
    return VerificationPairs(list(images), list(issame))


def write_verification_bin(path: Path, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write 2N encoded images and N issame flags as insightface reads them."""
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs")
    data = ([bytes(i) for i in images], [bool(s) for s in issame])
    Path(path).write_bytes(pickle.dumps(data, protocol=4))
