"""The build report: ``report.html`` for people and ``report.json``, the numbers it is drawn from, in every bundle.

:func:`write_report` makes both at the end of a build (:mod:`edgeml.report.data`
gathers the numbers, :mod:`edgeml.report.page` draws the page with
:mod:`edgeml.report.svg`); the bundle writer lists and hashes them in the
manifest's ``report`` section. :func:`rebuild` draws the page again from a
bundle alone (``edgeml report BUNDLE``). Host only: the runtime never reads them,
and ``edgeml package`` leaves them out.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from edgeml.errors import BundleError
from edgeml.report.data import FORMAT, importance_metric, report_data, to_bytes
from edgeml.report.page import render
from edgeml.verify.metrics import host_output, labels_of, task_metrics

HTML, JSON = "report.html", "report.json"
#: Shuffles of each input for its permutation importance (averaged).
REPEATS = 2


def make_report(manifest: dict, split, pipeline, features: pd.DataFrame, y: np.ndarray, *, seed: int = 0,
                firmware: dict | None = None) -> tuple[bytes, bytes]:
    """``report.html`` and ``report.json`` of a bundle whose finished manifest (as JSON) this is; ``pipeline`` is
    the host pipeline, ``features`` and ``y`` the test split; ``firmware`` what the build found of the plain-C form
    on a target whose firmware form it is (its flash and RAM, or why it cannot be written)."""
    task, classes = manifest["task"], len(manifest["classes"] or ())
    threshold = manifest["decision"]["threshold"] if manifest.get("decision") else None
    output = host_output(pipeline, features, task)
    inputs = {c["name"]: c["features"] for c in manifest["inputs"]}
    drops = permutation_drops(pipeline, features, y, task, classes, threshold, inputs, seed=seed)
    raw = to_bytes(report_data(manifest, split, y, output, drops, firmware))
    return render(json.loads(raw)).encode("utf-8"), raw  # drawn from the bytes stored, as `edgeml report` draws


def permutation_drops(pipeline, features: pd.DataFrame, y: np.ndarray, task: str, classes: int,
                      threshold: float | None, inputs: dict[str, list[str]] | None = None, *, seed: int = 0
                      ) -> dict[str, float]:
    """How much the test metric (:func:`~edgeml.report.data.importance_metric`) falls when each input is shuffled
    across the rows, the others kept (mean of :data:`REPEATS` shuffles, a fixed seed). ``inputs`` names each input
    as the table did and the feature columns it became (a date's parts shuffled together, as one reading); by
    default each column of ``features`` is an input."""
    metric = importance_metric(task, classes)

    def score(frame: pd.DataFrame) -> float:
        labels, probabilities = labels_of(task, host_output(pipeline, frame, task), threshold)
        return task_metrics(task, y, labels, probabilities).get(metric, 0.0)

    full = score(features)
    rng = np.random.default_rng(seed)
    drops = {}
    groups = {name: kept for name, columns in (inputs or {}).items()
              if (kept := [f for f in columns if f in features.columns])}
    covered = {f for columns in groups.values() for f in columns}
    groups.update({str(c): [c] for c in features.columns if c not in covered})
    for name, columns in groups.items():
        total = 0.0
        for _ in range(REPEATS):
            shuffled = features.copy()
            order = rng.permutation(len(shuffled))
            for column in columns:
                shuffled[column] = shuffled[column].to_numpy()[order]
            total += full - score(shuffled)
        drops[name] = total / REPEATS
    return drops


def rebuild(bundle: str | os.PathLike) -> str:
    """``report.html`` drawn again from the ``report.json`` of ``bundle`` (a folder or ``.tar.gz``), checked
    against its hash in the manifest."""
    from edgeml_runtime.bundle import open_bundle

    with open_bundle(bundle) as b:
        manifest = b.manifest()
        if manifest.report is None:
            raise BundleError(f"{bundle}: its manifest lists no report.json (the bundle was built before edgeml "
                              "wrote reports); rebuild it with `edgeml build` to get report.html")
        ref = manifest.report.data
        raw = b.read(ref.path, size=ref.bytes, sha256=ref.sha256)
    data = json.loads(raw)
    if data.get("format") != FORMAT:
        raise BundleError(f"{bundle}: {ref.path} has format {data.get('format')!r}, this edgeml draws format "
                          f"{FORMAT}; use the edgeml release that built the bundle, or rebuild it")
    return render(data)


__all__ = ["HTML", "JSON", "make_report", "permutation_drops", "rebuild"]
