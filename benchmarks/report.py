"""Write BENCHMARKS.md from the benchmarks' JSON: one short table and one plot per benchmark,
the raw figures in benchmarks/results/NAME.json, the reading in benchmarks/results/NAME.md.

    python benchmarks/report.py --runs var --out BENCHMARKS.md

A JSON file found in RUNS (a fresh run) is copied into RESULTS with its provenance (machine,
commit, date); a benchmark not rerun keeps its committed JSON, so no figure is typed by hand.
The readings are written by people: the report names the ones a fresh run may have outdated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

Rows = list[list[Any]]


@dataclass(frozen=True)
class Benchmark:
    name: str  # NAME.json in RUNS and RESULTS
    title: str
    command: str
    table: Callable[[dict[str, Any]], Rows]  # header row first
    plot: Callable[[Figure, dict[str, Any]], None]
    extras: Callable[[dict[str, Any]], list[Rows]] | None = None  # more tables, under the plot


# ----- one table and one plot per benchmark ---------------------------------------------------


def _bars(fig: Figure, labels: list[str], series: dict[str, list[float]], xlabel: str) -> None:
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.barh([y + i * width for y in range(len(labels))], values, width, label=name)
    ax.set_yticks([y + width * (len(series) - 1) / 2 for y in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if len(series) > 1:
        ax.legend()


def embedder_table(d: dict[str, Any]) -> Rows:
    rate, embed = d["detect_align"]["photos_per_s"], d["embeddings_per_s"]
    return [
        ["figure", "per second"],
        ["detect + align, 1 process (photos)", rate["1"]],
        ["detect + align, 2 processes (photos)", rate["2"]],
        *[[f"embeddings, {key.replace('_', ' ')}", value] for key, value in embed.items()],
    ]


def embedder_plot(fig: Figure, d: dict[str, Any]) -> None:
    embed = d["embeddings_per_s"]
    _bars(fig, [k.replace("_", " ") for k in embed], {"": list(embed.values())}, "embeddings/s")


RUNTIME_STAGES = {
    "embedder, batch 1 (faces/s)": ("embedder", "batch1", "faces_per_s_median"),
    "embedder, batch 16 (faces/s)": ("embedder", "batch16", "faces_per_s_median"),
    "P-Net (photos/s)": ("mtcnn", "pnet", "photos_per_s_median"),
    "R-Net (photos/s)": ("mtcnn", "rnet", "photos_per_s_median"),
    "O-Net (photos/s)": ("mtcnn", "onet", "photos_per_s_median"),
    "whole detector (photos/s)": ("mtcnn", "detect_one_by_one", "photos_per_s_median"),
}


def runtime_table(d: dict[str, Any]) -> Rows:
    rows: Rows = [["stage", "PyTorch eager", "ONNX Runtime", "ONNX / PyTorch"]]
    for label, (part, stage, key) in RUNTIME_STAGES.items():
        figures = d[part][stage]
        rows.append(
            [label, figures["torch"][key], figures["onnx"][key], figures["onnx_over_torch"]]
        )
    return rows


def runtime_plot(fig: Figure, d: dict[str, Any]) -> None:
    ratios = [d[part][stage]["onnx_over_torch"] for part, stage, _ in RUNTIME_STAGES.values()]
    _bars(fig, list(RUNTIME_STAGES), {"": ratios}, "ONNX Runtime / PyTorch eager (1 = same speed)")
    fig.axes[0].axvline(1, color="black", linewidth=0.8)


DETECT_STAGES = {
    "decode": ("decode",),
    "P-Net": ("pnet", "total"),
    "R-Net": ("rnet", "total"),
    "O-Net": ("onet", "total"),
    "align": ("align",),
    "embed (batches of 16)": ("embed_batched_16",),
}


def _profile_columns(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{runtime}, from {px} px": d[part]["ms_per_photo"][runtime]
        for part, px in (("profile", 20), ("profile_min40", 40))
        for runtime in ("torch", "onnx")
    }


def _stage_ms(figures: dict[str, Any], keys: tuple[str, ...]) -> float:
    value: Any = figures
    for key in keys:
        value = value[key]
    return float(value)


def profile_table(d: dict[str, Any]) -> Rows:
    columns = _profile_columns(d)
    rows: Rows = [["ms per photo, one thread", *columns]]
    for label, keys in {**DETECT_STAGES, "detection in all": ("detect_total",)}.items():
        cells = [_stage_ms(figures, keys) for figures in columns.values()]
        rows.append([label, *[cell if cell else "-" for cell in cells]])
    return rows


def profile_extras(d: dict[str, Any]) -> list[Rows]:
    """The serving path by photo size and detector (its `by_size` part), where it ran."""
    if "by_size" not in d:
        return []
    part = d["by_size"]
    detectors = [name for name in part if name not in ("photos", "sizes", "run")]
    columns = {f"{n}, {z}": part[n][z] for z in part["sizes"] for n in detectors}
    rows: Rows = [[f"serving path, {part['photos']} photos", *columns]]
    for stage in next(iter(columns.values()))["ms_per_photo"]:
        rows.append([f"{stage}, CPU ms", *[f["ms_per_photo"][stage] for f in columns.values()]])
    for label, key in (
        ("photos per CPU second", "photos_per_cpu_s"),
        ("fresh process: peak MB", "process_peak_mb"),
        ("fresh process: MB once loaded", "loaded_mb"),
        ("fresh process: peak MB serving", "serving_peak_mb"),
    ):
        rows.append([label, *[f[key] for f in columns.values()]])
    return [rows]


def profile_plot(fig: Figure, d: dict[str, Any]) -> None:
    ax = fig.subplots()
    columns = _profile_columns(d)
    left = [0.0] * len(columns)
    for label, keys in DETECT_STAGES.items():
        widths = [_stage_ms(figures, keys) for figures in columns.values()]
        ax.barh(list(columns), widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("ms per photo (the 40 px runs time detection only)")
    ax.legend(fontsize="small")


TRAIN_HEADS = {
    "global": "global",
    "cqa": "CQA",
    "cqa_without_cal": "CQA without CAL",
    "cqa_without_qan": "CQA without QAN",
}


def train_table(d: dict[str, Any]) -> Rows:
    heads = [f"{label}, samples/s" for label in TRAIN_HEADS.values()]
    rows: Rows = [["stem", "batch", *heads, "CQA / global"]]
    for stem in ("mobilefacenet", "r50"):
        rates = d[stem]["samples_per_s"]
        rows.append(
            [
                stem,
                d[stem]["batch"],
                *[rates[h] for h in TRAIN_HEADS],
                d[stem]["cqa_over_global_samples_per_s"],
            ]
        )
    return rows


def train_plot(fig: Figure, d: dict[str, Any]) -> None:
    series = {
        stem: [
            d[stem]["samples_per_s"][h] / d[stem]["samples_per_s"]["global"] for h in TRAIN_HEADS
        ]
        for stem in ("mobilefacenet", "r50")
    }
    _bars(fig, list(TRAIN_HEADS.values()), series, "samples/s relative to the global head")


SEARCH_METHODS = {
    "numpy float32 scan": "numpy_f32",
    "faiss exact": "faiss_exact",
    "16-byte PQ + OPQ, 100 re-scored": "faiss_pq16_shortlist100",
    "32-byte PQ + OPQ, 300 re-scored (default)": "faiss_pq32_shortlist300",
}


def search_table(d: dict[str, Any]) -> Rows:
    rows: Rows = [
        [
            "templates",
            *[f"{m}: p50 ms" for m in SEARCH_METHODS],
            "default: recall@1",
            "exact: Rank-1",
        ]
    ]
    for size in d["sizes"]:
        single = size["single"]
        rows.append(
            [
                size["templates"],
                *[single[key]["p50_ms"] for key in SEARCH_METHODS.values()],
                size["recall_at_1_vs_exact"]["faiss_pq32_shortlist300"],
                size["rank1"]["faiss_exact"],
            ]
        )
    return rows


def search_plot(fig: Figure, d: dict[str, Any]) -> None:
    ax = fig.subplots()
    sizes = [size["templates"] for size in d["sizes"]]
    for label, key in SEARCH_METHODS.items():
        ax.plot(sizes, [size["single"][key]["p50_ms"] for size in d["sizes"]], "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="templates", ylabel="p50 ms per probe")
    ax.legend(fontsize="small")


ENROL_SETUPS = {
    "standalone, one photo at a time": "standalone_one_by_one",
    "standalone, embedding batched by 16": "standalone_batched_16",
    "job in the same process -> DB": "in_process_job",
    "HTTP API: a zip -> serve (embedded) -> DB": "http_zip_embedded",
    "queue -> 1 worker process -> DB -> index": "full_path_1",
    "queue -> 2 worker processes -> DB -> index": "full_path_2",
}


def _enrol_columns(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """'config, size' -> its figures, configurations side by side at each size."""
    sizes = list(next(iter(d["figures"].values())))
    return {f"{c}, {z}": d["figures"][c][z] for z in sizes for c in d["figures"]}


def enrol_table(d: dict[str, Any]) -> Rows:
    """Photos/s per set-up, photo size and configuration (medians of the rounds)."""
    columns = _enrol_columns(d)
    rows: Rows = [["photos/s (median of rounds)", *columns]]
    for label, key in ENROL_SETUPS.items():
        rows.append([label, *[f["photos_per_s"][key] for f in columns.values()]])
    return rows


def enrol_extras(d: dict[str, Any]) -> list[Rows]:
    """Milliseconds per photo by stage of the profiled in-process job."""
    staged = {
        f"{c}, {z}": d["stages_ms_per_photo"][c][z]
        for z in next(iter(d["stages_ms_per_photo"].values()))
        for c in d["stages_ms_per_photo"]
    }
    clock = d.get("stages_clock", "wall time")
    stages: Rows = [[f"ms per photo by stage, one in-process job ({clock})", *staged]]
    for stage in next(iter(staged.values())):
        stages.append([stage, *[figures[stage] for figures in staged.values()]])
    return [stages]


def enrol_plot(fig: Figure, d: dict[str, Any]) -> None:
    series = {
        name: [f["photos_per_s"][k] for k in ENROL_SETUPS.values()]
        for name, f in _enrol_columns(d).items()
    }
    _bars(fig, list(ENROL_SETUPS), series, "photos/s")


def load_table(d: dict[str, Any]) -> Rows:
    return [
        ["subjects", "clients", "seconds", "requests/s", "p50 s", "p99 s", "max s", "errors"],
        [
            d["subjects"],
            d["clients"],
            d["seconds"],
            d["requests_per_s"],
            d["p50_s"],
            d["p99_s"],
            d["max_s"],
            len(d["errors"]),
        ],
    ]


def load_plot(fig: Figure, d: dict[str, Any]) -> None:
    _bars(
        fig,
        ["p50", "p99", "max"],
        {"": [d["p50_s"], d["p99_s"], d["max_s"]]},
        "seconds per identify request",
    )


FUSION_COLUMNS = {
    "Rank-1": "rank1",
    "Rank-5": "rank5",
    "TAR@FAR 1e-2": "tar_at_far_1e-2",
    "TAR@FAR 1e-3": "tar_at_far_1e-3",
    "genuine over the served threshold": "genuine_above_served_threshold",
    "impostors over the served threshold": "impostors_above_served_threshold",
}


def fusion_table(d: dict[str, Any]) -> Rows:
    rows: Rows = [["probes, policy", *FUSION_COLUMNS]]
    rows.append(
        ["bare, normal", *[d["unmasked_probes"].get(k, "-") for k in FUSION_COLUMNS.values()]]
    )
    for policy, figures in d["policies"].items():
        rows.append([f"masked, {policy}", *[figures[k] for k in FUSION_COLUMNS.values()]])
    return rows


def fusion_plot(fig: Figure, d: dict[str, Any]) -> None:
    left, right = fig.subplots(1, 2)
    policies = list(d["policies"])
    left.bar(policies, [d["policies"][p]["rank1"] for p in policies])
    left.set(ylim=(0.9, 1.0), ylabel="Rank-1 of masked probes")
    right.bar(policies, [d["policies"][p]["impostors_above_served_threshold"] for p in policies])
    right.axhline(1e-3, color="black", linewidth=0.8, label="FAR 1e-3, as calibrated")
    right.set(ylabel="impostor scores over the served threshold")
    right.legend(fontsize="small", loc="upper left")


def hygiene_table(d: dict[str, Any]) -> Rows:
    rows: Rows = [
        [
            "subjects",
            "index",
            "report s",
            "time x",
            "n log n x",
            "n² x",
            "heap peak MiB",
            "RSS peak MiB",
            "planted found",
            "other findings",
        ]
    ]
    for r in d["results"]:
        planted = f"{r['pairs_found']}/{r['planted_pairs']} pairs, "
        planted += f"{r['outliers_found']}/{r['planted_outliers']} outliers"
        other = f"{r['other_pairs']} pairs, {r['outliers_with_pair']} with a pair, "
        other += f"{r['other_outliers']} outliers"
        rows.append(
            [
                r["subjects"],
                r["index"],
                r["report_s"],
                r["time_vs_smallest"],
                r["n_log_n_vs_smallest"],
                r["n_squared_vs_smallest"],
                r["heap_peak_mib"],
                r["rss_peak_mib"],
                planted,
                other,
            ]
        )
    return rows


def hygiene_plot(fig: Figure, d: dict[str, Any]) -> None:
    ax = fig.subplots()
    sizes = [r["subjects"] for r in d["results"]]
    ax.plot(sizes, [r["time_vs_smallest"] for r in d["results"]], "o-", label="report time")
    ax.plot(sizes, [r["n_log_n_vs_smallest"] for r in d["results"]], "--", label="n log n")
    ax.plot(sizes, [r["n_squared_vs_smallest"] for r in d["results"]], ":", label="n²")
    ax.set(xlabel="subjects", ylabel="relative to the smallest gallery")
    ax.legend()


def compare_table(d: dict[str, Any]) -> Rows:
    rows: Rows = [["set", "detector", "photos", "recall", "confirmed", "false / unconfirmed"]]
    for data, by_detector in d["sets"].items():
        for name, f in by_detector.items():
            false = f.get("unconfirmed_faces", f["false_detections"])
            rows.append([data, name, f["photos"], round(f["recall"], 4),
                         round(f["confirmed_recall"], 4) if "confirmed_recall" in f else "-",
                         false])  # fmt: skip
    for name, f in d["identification"].items():
        rows.append([f"Rank-1 / M2N ({f['rank1_probes']} probes)", name, "-",
                     f"{f['rank1']:.4f} / {f['m2n']:.4f}", "-", "-"])  # fmt: skip
    return rows


def compare_plot(fig: Figure, d: dict[str, Any]) -> None:
    sets = list(d["sets"])
    names = list(next(iter(d["sets"].values())))
    series = {n: [100 * d["sets"][s].get(n, {}).get("recall", 0) for s in sets] for n in names}
    _bars(fig, sets, series, "recall (%)")


BENCHMARKS = (
    Benchmark(
        "bench-embedder",
        "Embedder: detection, alignment, embedding",
        "make bench-embedder",
        embedder_table,
        embedder_plot,
    ),
    Benchmark(
        "bench-runtime",
        "Embedder and detector on the CPU: PyTorch eager against ONNX Runtime",
        "make bench-runtime",
        runtime_table,
        runtime_plot,
    ),
    Benchmark(
        "profile-detect",
        "Detector per stage and the enrolment minimum",
        "make profile-detect",
        profile_table,
        profile_plot,
        profile_extras,
    ),
    Benchmark(
        "bench-train",
        "Training step: CQA-Face against the global head",
        "make bench-train",
        train_table,
        train_plot,
    ),
    Benchmark(
        "bench-search",
        "Gallery search: FAISS exact and PQ against numpy",
        "make bench-search",
        search_table,
        search_plot,
    ),
    Benchmark(
        "bench-enrol",
        "Bulk enrolment: queue, workers, database, index",
        "make bench-enrol",
        enrol_table,
        enrol_plot,
        enrol_extras,
    ),
    Benchmark(
        "bench-load",
        "Identify under load through the HTTP API",
        "make bench-load",
        load_table,
        load_plot,
    ),
    Benchmark(
        "compare-detectors",
        "Face detectors side by side (rwmfd: the held-out half)",
        "make compare-detectors BENCH_ARGS='--half test --step 2'",
        compare_table,
        compare_plot,
    ),
    Benchmark(
        "bench-mask-fusion",
        "Masked probes: how to score them (CQAFACE_MASK_FUSION)",
        "make bench-mask-fusion",
        fusion_table,
        fusion_plot,
    ),
    Benchmark(
        "bench-hygiene",
        "Gallery hygiene report: 25K to 100K subjects",
        "make bench-hygiene",
        hygiene_table,
        hygiene_plot,
    ),
)


# ----- the report ------------------------------------------------------------------------------


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


def shown(value: Any) -> str:
    """Floats to 4 significant digits: the figures are noisy well before that."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(rows: Rows) -> str:
    lines = ["| " + " | ".join(shown(cell) for cell in row) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * len(rows[0]))
    return "\n".join(lines)


def fresh_result(path: Path) -> dict[str, Any]:
    """A run's JSON with where and when it was measured (the file's time, this checkout)."""
    figures = json.loads(path.read_text())
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures["report"] = {"written": written, "commit": commit(), "machine": machine()}
    return figures


def section(
    bench: Benchmark, figures: dict[str, Any], results: Path, plots: Path, out: Path
) -> tuple[str, Figure]:
    """One benchmark's markdown and plot, built before anything is written."""
    fig = Figure(figsize=(8, 4), layout="constrained")  # no pyplot: no GUI backend, no state
    bench.plot(fig, figures)
    fig.suptitle(bench.title, fontsize="medium")
    source = figures["report"]
    raw = f"{os.path.relpath(results, out.parent)}/{bench.name}.json"
    recovered = f", recovered from {source['recovered_from']}" if "recovered_from" in source else ""
    where = f", {source['machine']}" if source.get("machine") else ""
    parts = [
        f"## {bench.title}",
        "",
        f"`{bench.command}`: commit {source['commit']}, written {source['written']}{where}; "
        f"every figure in [`{raw}`]({raw}){recovered}.",
        "",
        markdown_table(bench.table(figures)),
        "",
        f"![{bench.title}]({os.path.relpath(plots, out.parent)}/{bench.name}.png)",
    ]
    for rows in bench.extras(figures) if bench.extras else []:
        parts += ["", markdown_table(rows)]
    reading = results / f"{bench.name}.md"
    if reading.is_file():
        parts += ["", reading.read_text().strip()]
    return "\n".join(parts) + "\n", fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("var"), help="fresh JSON files")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--plots", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    built: list[tuple[Benchmark, dict[str, Any], bool, str, Figure]] = []
    missing = []
    for bench in BENCHMARKS:
        fresh, committed = args.runs / f"{bench.name}.json", args.results / f"{bench.name}.json"
        source = fresh if fresh.is_file() else committed
        if not source.is_file():
            missing.append(f"`{bench.command}`")
            continue
        try:
            figures = fresh_result(source) if source == fresh else json.loads(source.read_text())
            text, fig = section(bench, figures, args.results, args.plots, args.out)
        except (
            ValueError,
            KeyError,
            TypeError,
            IndexError,
        ) as error:  # JSON errors are ValueErrors
            print(
                f"report.py: {source} is not a {bench.name} result "
                f"({type(error).__name__}: {error}); nothing written",
                file=sys.stderr,
            )
            return 2
        built.append((bench, figures, source == fresh, text, fig))
    args.results.mkdir(parents=True, exist_ok=True)
    args.plots.mkdir(parents=True, exist_ok=True)
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/report.py`) from the JSON in `benchmarks/results/`; "
        "each section names the commit, date and machine of its figures. The machine is shared, "
        "so compare figures measured side by side in one run (the ratios), not across runs.",
        "",
    ]
    for bench, figures, is_fresh, text, fig in built:
        if is_fresh:
            (args.results / f"{bench.name}.json").write_text(json.dumps(figures, indent=1) + "\n")
        fig.savefig(args.plots / f"{bench.name}.png", dpi=80)
        parts.append(text)
    if missing:
        parts.append("Not run for this report: " + ", ".join(missing) + ".\n")
    args.out.write_text("\n".join(parts))
    measured = [bench.name for bench, _, is_fresh, _, _ in built if is_fresh]
    kept = len(built) - len(measured)
    print(f"wrote {args.out}: {len(measured)} measured, {kept} kept, {len(missing)} missing")
    for name in measured:
        if (args.results / f"{name}.md").is_file():
            print(f"check the reading {args.results / name}.md against the new figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
