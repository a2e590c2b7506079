"""MXNet's NDArray list format (`.params`), read with numpy: no mxnet needed to use insightface's
pretrained weights.

Layout: u64 magic 0x112, u64 reserved, u64 count, then `count` arrays, then u64 count of names
and each name as (u64 length, bytes). An array is a u32 magic (V1 0xF993FAC8: i32 ndim then
ndim x i64 dims; V2/V3 0xF993FAC9/0xF993FACA: i32 storage type, i32 ndim, ndim x i64 dims),
i32 device type, i32 device id, i32 type flag, then the raw little-endian data.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

LIST_MAGIC = 0x112
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8}


class ParamsFormatError(ValueError):
    """The file is not an MXNet NDArray list (or one this reader does not handle)."""


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ParamsFormatError(f"{self.path}: truncated at byte {self.pos}")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self) -> np.ndarray:
        (magic,) = self.take("<I")
        if magic not in (V1, V2, V3):
            raise ParamsFormatError(f"{self.path}: bad array magic {magic:#x} at {self.pos - 4}")
        if magic != V1:
            (storage,) = self.take("<i")
            if storage != 0:
                raise ParamsFormatError(f"{self.path}: sparse arrays are not supported")
        (ndim,) = self.take("<i")
        shape = self.take(f"<{ndim}q")
        _device_type, _device_id, flag = self.take("<iii")
        if flag not in DTYPES:
            raise ParamsFormatError(f"{self.path}: unknown type flag {flag}")
        dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
        count = int(np.prod(shape))
        end = self.pos + count * dtype.itemsize
        if end > len(self.data):
            raise ParamsFormatError(f"{self.path}: truncated array at byte {self.pos}")
        values = np.frombuffer(self.data, dtype, count, self.pos).reshape(shape)
        self.pos = end
        return values.astype(dtype.newbyteorder("="))

    def name(self) -> str:
        (length,) = self.take("<Q")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode()


def load(path: str | Path) -> dict[str, np.ndarray]:
    """name (`arg:...` weights, `aux:...` batch-norm statistics) -> array."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), path)
    magic, _reserved, count = reader.take("<QQQ")
    if magic != LIST_MAGIC:
        raise ParamsFormatError(f"{path}: not an MXNet .params file (magic {magic:#x})")
    arrays = [reader.array() for _ in range(count)]
    (names,) = reader.take("<Q")
    if names != count:
        raise ParamsFormatError(f"{path}: {count} arrays but {names} names")
    return {reader.name(): array for array in arrays}
