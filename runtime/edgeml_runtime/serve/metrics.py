"""``GET /metrics``: what ``serve`` counts, in the Prometheus text format (0.0.4) and by its naming rules.

One ``edgeml_`` prefix, base units (seconds, bytes), ``_total`` on
counters, ``_info`` on the metric whose labels describe the model. The
counts are plain integers and floats updated under one lock; the text is
rendered on each scrape. Written here rather than with ``prometheus_client``
so that the device needs nothing more (the tests parse it with
``prometheus_client``'s parser).

Example:

>>> h = Histogram((0.001, 0.01))
>>> h.observe(0.0005); h.observe(0.02)
>>> print("\\n".join(h.lines("edgeml_inference_duration_seconds")))
edgeml_inference_duration_seconds_bucket{le="0.001"} 1
edgeml_inference_duration_seconds_bucket{le="0.01"} 1
edgeml_inference_duration_seconds_bucket{le="+Inf"} 2
edgeml_inference_duration_seconds_sum 0.0205
edgeml_inference_duration_seconds_count 2
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter

#: Inference time buckets, in seconds: from 50 µs (one row on a workstation) to 2.5 s.
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Counts per upper bound (cumulative when rendered), their sum and count."""

    def __init__(self, bounds=BUCKETS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, count in zip((*map(_number, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append(f'{name}_bucket{{le="{bound}"}} {total}')
        out += [f"{name}_sum {_number(self.sum)}", f"{name}_count {total}"]
        return out


class ServeMetrics:
    """The server's counters; :meth:`render` is the scrape. Safe to update from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()        # (handler, code) -> requests answered
        self.rows: Counter = Counter()            # "scored" / "bad" -> rows
        self.inference = Histogram()
        self.in_flight = 0
        self.swaps = 0
        self.windows = 0

    def answered(self, handler: str, code: int) -> None:
        with self._lock:
            self.requests[handler, code] += 1

    def scored(self, seconds: float, scored: int, bad: int) -> None:
        with self._lock:
            self.inference.observe(seconds)
            self.rows["scored"] += scored
            self.rows["bad"] += bad

    def refused(self, bad: int) -> None:
        """Bad rows of a request refused before scoring (not timed)."""
        with self._lock:
            self.rows["bad"] += bad

    def render(self, model: dict, drift: dict | None, started: float) -> bytes:
        """The text format: ``model`` as ``describe_model`` gives it; ``drift`` the open window (or None)."""
        with self._lock:
            requests, rows = sorted(self.requests.items()), dict(self.rows)
            histogram = self.inference.lines("edgeml_inference_duration_seconds")
            in_flight, swaps, windows = self.in_flight, self.swaps, self.windows
        out: list[str] = []
        _family(out, "edgeml_model_info", "gauge", "the model being served (always 1)",
                [(_labels(name=model["name"], version=model["version"], bundle_sha256=model["bundle_sha256"],
                          artifact=model["artifact"]), 1)])
        _family(out, "edgeml_process_start_time_seconds", "gauge", "when serve started, in seconds since the epoch",
                [("", started)])
        _family(out, "edgeml_http_requests_total", "counter", "HTTP requests answered, by handler and status code",
                [(_labels(handler=h, code=str(c)), n) for (h, c), n in requests])
        _family(out, "edgeml_http_requests_in_flight", "gauge", "inference requests admitted and not yet answered",
                [("", in_flight)])
        out += ["# HELP edgeml_inference_duration_seconds time to score one request's rows",
                "# TYPE edgeml_inference_duration_seconds histogram", *histogram]
        _family(out, "edgeml_rows_total", "counter", "rows received for scoring: scored, or bad (not scored)",
                [(_labels(result=k), rows.get(k, 0)) for k in ("scored", "bad")])
        _family(out, "edgeml_model_swaps_total", "counter", "bundles swapped in since serve started", [("", swaps)])
        _family(out, "edgeml_drift_windows_total", "counter", "drift windows closed since serve started",
                [("", windows)])
        if drift is not None:
            _family(out, "edgeml_drift_window_rows", "gauge", "scored rows in the open drift window",
                    [("", drift.get("rows", 0))])
            _family(out, "edgeml_drift_psi", "gauge", "population stability index of each input column in the open "
                    "drift window, against the bundle's reference",
                    [(_labels(column=name), c["psi"]) for name, c in drift["columns"].items()
                     if c.get("psi") is not None])
            psi = (drift.get("output") or {}).get("psi")
            if psi is not None:
                _family(out, "edgeml_drift_output_psi", "gauge", "population stability index of the model's output "
                        "in the open drift window", [("", psi)])
        return ("\n".join(out) + "\n").encode()


def _family(out: list[str], name: str, kind: str, help_text: str, samples) -> None:
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    out += [f"{name}{labels} {_number(value)}" for labels, value in samples]


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


__all__ = ["BUCKETS", "CONTENT_TYPE", "Histogram", "ServeMetrics"]
