"""Gather the benchmarks' JSON figures into BENCHMARKS.md: the machine, the commit, the command
that produced each file, and its figures as written (no figure is typed by hand).

    python benchmarks/report.py --runs var --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# file in RUNS -> (title, the make target that writes it)
SOURCES = {
    "bench-embedder.json": ("Embedder: detection, alignment, embedding", "make bench-embedder"),
    "bench-runtime.json": (
        "Embedder and detector on the CPU: PyTorch eager against ONNX Runtime",
        "make bench-runtime",
    ),
    "profile-detect.json": (
        "Detector per stage, face sizes, and the enrolment minimum",
        "make profile-detect",
    ),
    "bench-train.json": ("Training step: CQA-Face against the global baseline", "make bench-train"),
    "bench-search.json": (
        "Gallery search: FAISS exact, PQ, HNSW against numpy",
        "make bench-search",
    ),
    "bench-enrol.json": ("Bulk enrolment: queue, workers, database, index", "make bench-enrol"),
    "bench-load.json": ("Identify under load through the HTTP API", "make bench-load"),
}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}"
    )


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = []
        for i, item in enumerate(value):
            rows += flatten(item, f"{prefix}[{i}]")
        return rows
    return [(prefix, value)]


def shown(value: Any) -> str:
    """Floats to 4 significant digits: the figures are noisy well before that."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return value if isinstance(value, str) else json.dumps(value)


def section(path: Path, title: str, command: str) -> str:
    figures = json.loads(path.read_text())
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {title}",
        "",
        f"`{command}` (written {written})",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {shown(value)} |" for name, value in flatten(figures)]
    return "\n".join(lines) + "\n"


def kept_sections(path: Path) -> dict[str, str]:
    """The sections of an earlier report by title: a benchmark not rerun here keeps its
    figures (var/ does not survive a new machine; the report does)."""
    if not path.is_file():
        return {}
    text = path.read_text()
    sections = {}
    for chunk in text.split("\n## ")[1:]:
        title, _, _ = chunk.partition("\n")
        body = chunk.split("\nNot run for this report:")[0].rstrip("\n")
        sections[title] = f"## {body}\n"
    return sections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("var"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    parts = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}. Commit {commit()}. Written by `make bench` "
        "(`benchmarks/report.py`) from the JSON files in "
        f"`{args.runs}/`; a benchmark not rerun keeps its earlier section, and each section "
        "says when its figures were written. The machine is shared, so compare figures "
        "measured side by side in one run (the ratios), not across runs.",
        "",
    ]
    earlier = kept_sections(args.out)
    missing, kept = [], 0
    for name, (title, command) in SOURCES.items():
        path = args.runs / name
        if path.is_file():
            parts.append(section(path, title, command))
        elif title in earlier:
            parts.append(earlier[title])
            kept += 1
        else:
            missing.append(f"`{command}`")
    if missing:
        parts.append("Not run for this report: " + ", ".join(missing) + ".\n")
    args.out.write_text("\n".join(parts))
    measured = len(SOURCES) - len(missing) - kept
    print(f"wrote {args.out}: {measured} benchmarks measured, {kept} kept, {len(missing)} missing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
