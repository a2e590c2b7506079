"""BENCHMARKS.md is rebuilt from the benchmarks' JSON: a fresh run replaces its committed JSON
(with its commit and date) and its table; a benchmark not rerun keeps its committed figures and
reading; each section has its plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LOAD = {
    "subjects": 10000,
    "clients": 50,
    "seconds": 65.3,
    "requests": 593,
    "requests_per_s": 9.08,
    "p50_s": 5.447,
    "p99_s": 6.312,
    "max_s": 6.691,
    "statuses": {"200": 593},
    "errors": [],
}

TRAIN = {
    "mobilefacenet": {
        "batch": 64,
        "samples_per_s": {
            "global": 19.6,
            "cqa": 20.2,
            "cqa_without_cal": 19.6,
            "cqa_without_qan": 19.3,
        },
        "cqa_over_global_samples_per_s": 1.031,
    },
    "r50": {
        "batch": 16,
        "samples_per_s": {
            "global": 2.0,
            "cqa": 2.1,
            "cqa_without_cal": 2.1,
            "cqa_without_qan": 2.2,
        },
        "cqa_over_global_samples_per_s": 1.018,
    },
    "report": {"written": "2026-11-29 00:33 UTC", "commit": "abc1234"},
}


def report(runs: Path, results: Path, plots: Path, out: Path) -> str:
    command = [sys.executable, "benchmarks/report.py", "--runs", str(runs)]
    command += ["--results", str(results), "--plots", str(plots), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_a_fresh_run_replaces_its_results_and_the_others_are_kept(tmp_path: Path) -> None:
    runs, results, plots = tmp_path / "var", tmp_path / "results", tmp_path / "docs" / "plots"
    runs.mkdir()
    results.mkdir()
    (runs / "bench-load.json").write_text(json.dumps(LOAD))
    (results / "bench-load.json").write_text(json.dumps({**LOAD, "p50_s": 99.0}))
    (results / "bench-load.md").write_text("Reading: the old load run.\n")
    (results / "bench-train.json").write_text(json.dumps(TRAIN))
    (results / "bench-train.md").write_text("Reading: CQA costs nothing.\n")
    out = tmp_path / "BENCHMARKS.md"

    printed = report(runs, results, plots, out)

    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    stored = json.loads((results / "bench-load.json").read_text())
    assert {k: v for k, v in stored.items() if k != "report"} == LOAD
    assert stored["report"]["commit"] == head and stored["report"]["written"].endswith(" UTC")
    text = out.read_text()
    assert (
        "| subjects | clients | seconds | requests/s | p50 s | p99 s | max s | errors |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        "| 10000 | 50 | 65.3 | 9.08 | 5.447 | 6.312 | 6.691 | 0 |\n"
    ) in text
    assert "| mobilefacenet | 64 | 19.6 | 20.2 | 19.6 | 19.3 | 1.031 |" in text
    assert (
        "`make bench-train`: commit abc1234, written 2026-11-29 00:33 UTC; every figure in" in text
    )
    assert "[`results/bench-train.json`](results/bench-train.json)" in text
    assert "Reading: CQA costs nothing." in text and "Reading: the old load run." in text
    assert "![Identify under load through the HTTP API](docs/plots/bench-load.png)" in text
    assert sorted(p.name for p in plots.iterdir()) == ["bench-load.png", "bench-train.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.iterdir())
    assert text.endswith(
        "Not run for this report: `make bench-embedder`, `make bench-runtime`, "
        "`make profile-detect`, `make bench-search`, `make bench-enrol`, "
        "`make compare-detectors BENCH_ARGS='--half test --step 2'`, `make bench-mask-fusion`, "
        "`make bench-hygiene`.\n"
    )
    assert printed == (
        f"wrote {out}: 1 measured, 1 kept, 8 missing\n"
        f"check the reading {results}/bench-load.md against the new figures\n"
    )


@pytest.mark.parametrize(
    ("fresh", "error"),
    [
        ("{not json", "JSONDecodeError"),
        ("[1, 2]", "TypeError"),
        (json.dumps({k: v for k, v in LOAD.items() if k != "p99_s"}), "KeyError: 'p99_s'"),
    ],
)
def test_a_broken_fresh_result_is_refused_and_nothing_is_written(
    tmp_path: Path, fresh: str, error: str
) -> None:
    runs, results, plots = tmp_path / "var", tmp_path / "results", tmp_path / "plots"
    runs.mkdir()
    results.mkdir()
    (runs / "bench-load.json").write_text(fresh)
    committed = json.dumps({**LOAD, "report": {"written": "2026-11-29 01:04 UTC", "commit": "x"}})
    (results / "bench-load.json").write_text(committed)
    (results / "bench-train.json").write_text(json.dumps(TRAIN))
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("the earlier report\n")
    command = [sys.executable, "benchmarks/report.py", "--runs", str(runs)]
    command += ["--results", str(results), "--plots", str(plots), "--out", str(out)]

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)

    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(
        f"report.py: {runs / 'bench-load.json'} is not a bench-load result ({error}"
    )
    assert done.stderr.endswith("; nothing written\n") and "Traceback" not in done.stderr
    assert (results / "bench-load.json").read_text() == committed
    assert out.read_text() == "the earlier report\n" and not plots.exists()
