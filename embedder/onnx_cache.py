"""ONNX graphs exported on first use and kept in a cache folder, keyed by what they came from.

A graph's file name carries a key derived from its source (the checkpoint's weights, the
exporter's opset), so a new checkpoint never meets an old graph. Each file is written under a
temporary name and renamed into place, with a digest of its bytes beside it; a file whose
bytes no longer match its digest (truncated, overwritten) is exported again, not trusted.
Two processes exporting at once both write whole files, and the last rename wins.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from embedder import settings


def cached(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """The path of ``name``'s graph for ``key``; ``build(path)`` exports it when the cache
    holds no intact copy."""
    folder = settings.onnx_cache_dir()
    path = folder / f"{name}-{key}.onnx"
    if _intact(path):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".onnx")
    os.close(descriptor)
    try:
        build(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the other users of the cache
        digest = _digest(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _write_atomically(_digest_path(path), digest)
    return path


def _intact(path: Path) -> bool:
    marker = _digest_path(path)
    if not (path.is_file() and marker.is_file()):
        return False
    return marker.read_text().strip() == _digest(path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
