"""Request counters and latency histograms of this process, in Prometheus' text format.

Kept in memory per process: `cqaface serve` runs one process with threads, so its figures are
the server's. Gauges (gallery size, queue depth) are read when scraped.
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, endpoint, status)] += 1
            counts = self.latency_counts.setdefault(endpoint, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.latency_sum[endpoint] += seconds

    def render(self, gauges: dict[str, tuple[str, float | None]]) -> str:
        lines = [
            "# HELP cqaface_http_requests_total HTTP requests by method, endpoint and status.",
            "# TYPE cqaface_http_requests_total counter",
        ]
        with self._lock:
            for (method, endpoint, status), n in sorted(self.requests.items()):
                labels = f'method="{method}",endpoint="{_label(endpoint)}",status="{status}"'
                lines.append(f"cqaface_http_requests_total{{{labels}}} {n}")
            lines += [
                "# HELP cqaface_http_request_duration_seconds Request latency by endpoint.",
                "# TYPE cqaface_http_request_duration_seconds histogram",
            ]
            for endpoint, counts in sorted(self.latency_counts.items()):
                name = "cqaface_http_request_duration_seconds"
                label = f'endpoint="{_label(endpoint)}"'
                for bound, n in zip(BUCKETS, counts, strict=False):
                    lines.append(f'{name}_bucket{{{label},le="{bound}"}} {n}')
                lines.append(f'{name}_bucket{{{label},le="+Inf"}} {counts[-1]}')
                lines.append(f"{name}_sum{{{label}}} {self.latency_sum[endpoint]:.6f}")
                lines.append(f"{name}_count{{{label}}} {counts[-1]}")
        for name, (help_text, value) in gauges.items():
            if value is None:
                continue
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
