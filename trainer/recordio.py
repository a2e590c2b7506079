"""insightface's RecordIO face sets (`train.rec` + `train.idx`, how MS1MV2 ships), read without
mxnet.

Binary format (dmlc-core recordio, little-endian):

- A record is `uint32 magic 0xced7230a`, `uint32 lrec`, then `length` payload bytes, zero-padded
  to a multiple of 4. `lrec` holds the length in its low 29 bits and a continuation flag in
  its top 3 bits: 0 a whole record; 1, 2, 3 the first, a middle and the last part of a record
  that the writer split where the magic number occurred, 4-byte aligned, in the payload. The
  reader joins the parts, putting the magic number back between them.
- A payload is mxnet's IRHeader, struct `IfQQ` (24 bytes): `flag` (uint32), `label` (float32),
  `id`, `id2` (uint64); then, when `flag` > 0, `flag` float32 labels replacing `label`; then
  the encoded image (JPEG in MS1MV2).
- Record 0 is a header whose labels (flag 2) give `[n + 1, n + 1 + k)`: images are records
  1..n, and records n+1..n+k (one per identity, labels = its image range) follow them.
- The `.idx` file is text, one `key<TAB>byte offset` line per record.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.folder_dataset import Transform, crop_to_tensor, decode_crop

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)


class RecordIOError(ValueError):
    """A .rec or .idx file that does not follow the format."""


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """IRHeader + payload as mxnet.recordio.pack writes them (a tuple label sets `flag`)."""
    if isinstance(header.label, tuple):
        labels = np.asarray(header.label, "<f4").tobytes()
        head = struct.pack(_IR_FORMAT, len(header.label), 0.0, header.id, header.id2)
        return head + labels + payload
    return struct.pack(_IR_FORMAT, 0, header.label, header.id, header.id2) + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """The inverse of `pack`."""
    if len(record) < _IR_SIZE:
        raise RecordIOError(f"a record of {len(record)} bytes has no {_IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, record)
    if flag == 0:
        return IRHeader(0, label, id_, id2), record[_IR_SIZE:]
    end = _IR_SIZE + 4 * flag
    labels = tuple(float(x) for x in np.frombuffer(record[_IR_SIZE:end], "<f4"))
    return IRHeader(flag, labels, id_, id2), record[end:]


def read_index(path: Path) -> dict[int, int]:
    """key -> byte offset from a .idx file."""
    index = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) != 2 or not all(f.strip().isdigit() for f in fields):
            raise RecordIOError(f"{path}:{number}: expected 'key<TAB>offset', got {line!r}")
        index[int(fields[0])] = int(fields[1])
    return index


def read_record(file: BinaryIO, offset: int) -> bytes:
    """The record starting at `offset`, its parts joined."""
    file.seek(offset)
    parts = []
    while True:
        head = file.read(8)
        if len(head) < 8:
            raise RecordIOError(f"truncated record at byte {file.tell() - len(head)}")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"no record at byte {file.tell() - 8} (magic {magic:#x})")
        flag, length = lrec >> _LENGTH_BITS, lrec & _LENGTH_MASK
        parts.append(file.read(length))
        file.seek(-length % 4, os.SEEK_CUR)
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts)


class RecordWriter:
    """Writes a .rec and its .idx as dmlc-core does (split records included)."""

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self._rec = open(rec_path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        self._idx = open(idx_path, "w")  # noqa: SIM115

    def write(self, key: int, payload: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        aligned = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == _MAGIC_BYTES]
        starts, ends = [0] + [i + 4 for i in aligned], [*aligned, len(payload)]
        for n, (start, end) in enumerate(zip(starts, ends, strict=True)):
            last, first = n == len(aligned), n == 0
            flag = 0 if first and last else 1 if first else 3 if last else 2
            self._rec.write(struct.pack("<II", MAGIC, flag << _LENGTH_BITS | (end - start)))
            self._rec.write(payload[start:end] + b"\0" * (-(end - start) % 4))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_face_records(rec_path: Path, samples: Iterable[tuple[bytes, int]]) -> Path:
    """Write (encoded image, label 0..K-1) samples in insightface's layout; the .idx goes
    beside the .rec. Images are stored grouped by label, as the identity records require."""
    samples = sorted(samples, key=lambda s: s[1])
    labels = [label for _, label in samples]
    n, k = len(samples), (max(labels) + 1 if labels else 0)
    idx_path = Path(rec_path).with_suffix(".idx")
    with RecordWriter(rec_path, idx_path) as writer:
        writer.write(0, pack(IRHeader(2, (n + 1.0, n + 1.0 + k), 0, 0), b""))
        for key, (image, label) in enumerate(samples, 1):
            writer.write(key, pack(IRHeader(0, float(label), key, 0), image))
        starts = np.searchsorted(labels, np.arange(k + 1)) + 1
        for label in range(k):
            span = (float(starts[label]), float(starts[label + 1]))
            writer.write(n + 1 + label, pack(IRHeader(2, span, 0, 0), b""))
    return idx_path


class RecordIODataset(Dataset[tuple[torch.Tensor | np.ndarray, int]]):
    """(crop tensor, label) from an insightface .rec/.idx, by random access through the index.

    Same contract as `FolderDataset`: `transform` on the uint8 crop, `tensors=False` for the
    crop itself. Each process opens its own file handle, so DataLoader workers never share a
    file position.
    """

    def __init__(
        self,
        rec_path: Path,
        idx_path: Path | None = None,
        *,
        transform: Transform | None = None,
        tensors: bool = True,
    ) -> None:
        self.rec_path = Path(rec_path)
        self.offsets = read_index(idx_path or self.rec_path.with_suffix(".idx"))
        self.transform, self.tensors = transform, tensors
        self._file: BinaryIO | None = None
        self._pid = -1
        header = unpack(self._read(0))[0] if 0 in self.offsets else None
        if header is not None and header.flag > 0:
            first_identity, end = (int(x) for x in header.label[:2])  # type: ignore[index]
            self.keys = list(range(1, first_identity))
            self.num_classes = end - first_identity
        else:  # no header record: every record is an image
            self.keys = sorted(self.offsets)
            self.num_classes = 1 + max(self.label(i) for i in range(len(self.keys)))

    def __len__(self) -> int:
        return len(self.keys)

    def label(self, index: int) -> int:
        return _label(unpack(self._read(self.keys[index]))[0])

    def crop(self, index: int) -> np.ndarray:
        """The decoded uint8 crop, before any transform."""
        return self._sample(index)[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, int]:
        crop, label = self._sample(index)
        if self.transform is not None:
            crop = self.transform(crop)
        return crop_to_tensor(crop) if self.tensors else crop, label

    def _sample(self, index: int) -> tuple[np.ndarray, int]:
        key = self.keys[index]
        header, image = unpack(self._read(key))
        return decode_crop(image, f"{self.rec_path} record {key}"), _label(header)

    def _read(self, key: int) -> bytes:
        if key not in self.offsets:
            raise RecordIOError(f"{self.rec_path}: no record {key} in its index")
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open(self.rec_path, "rb"), os.getpid()  # noqa: SIM115
        return read_record(self._file, self.offsets[key])

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_file": None, "_pid": -1}


def _label(header: IRHeader) -> int:
    return int(header.label if isinstance(header.label, float) else header.label[0])
