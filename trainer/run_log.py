"""Training log: one JSON object per line in the run folder, and a readable line on stdout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class RunLog:
    def __init__(self, path: Path, total_steps: int, stream: TextIO = sys.stdout) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")
        self.total_steps = total_steps
        self.stream = stream
        self._last_time = time.perf_counter()
        self._last_step: int | None = None

    def step(self, step: int, epoch: float, samples: int, **values: float) -> dict[str, Any]:
        """Logs a training step; samples/s and ETA are measured since the previous call."""
        now = time.perf_counter()
        elapsed = now - self._last_time
        steps = 0 if self._last_step is None else step - self._last_step
        rate = samples / elapsed if elapsed > 0 and steps else 0.0
        eta = (self.total_steps - step) * elapsed / steps if steps else None
        self._last_time, self._last_step = now, step
        record = {
            "kind": "train",
            "step": step,
            "epoch": round(epoch, 4),
            "samples_per_s": round(rate, 1),
            "eta_s": eta and round(eta),
            **values,
        }
        self.write(record)
        eta_text = f"{eta / 60:.0f} min" if eta is not None else "?"
        parts = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        self.stream.write(
            f"step {step}/{self.total_steps} epoch {epoch:.2f} {parts} "
            f"{rate:.0f} samples/s eta {eta_text}\n"
        )
        self.stream.flush()
        return record

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
