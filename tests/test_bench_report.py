"""BENCHMARKS.md is rebuilt from the benchmarks' JSON files; a benchmark not rerun on this
machine (var/ is gone on a new one) keeps its earlier section word for word."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EARLIER = """# Benchmarks

Machine: an older one.

## Embedder: detection, alignment, embedding

`make bench-embedder` (written 2026-01-01 00:00 UTC)

| figure | value |
| --- | --- |
| faces_per_s | 35 |

## Gallery search: FAISS exact, PQ, HNSW against numpy

`make bench-search` (written 2026-01-01 00:00 UTC)

| figure | value |
| --- | --- |
| old | 1 |

Not run for this report: `make bench-train`.
"""


def report(runs: Path, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, "benchmarks/report.py", "--runs", str(runs), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_a_rerun_benchmark_replaces_its_section_and_the_others_are_kept(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "bench-search.json").write_text(json.dumps({"recall": 0.5, "sizes": [{"n": 10}]}))
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(EARLIER)

    printed = report(runs, out)

    text = out.read_text()
    assert "| old | 1 |" not in text
    assert "| recall | 0.5 |\n| sizes[0].n | 10 |" in text
    embedder = EARLIER[EARLIER.index("## Embedder") : EARLIER.index("## Gallery")]
    assert embedder in text
    assert text.endswith(
        "Not run for this report: `make bench-runtime`, `make profile-detect`, "
        "`make bench-train`, `make bench-enrol`, `make bench-load`.\n"
    )
    assert printed == f"wrote {out}: 1 benchmarks measured, 1 kept, 5 missing\n"
