"""Check that an exported artifact computes what the host pipeline computes.

The artifact is scored through ``edgeml_runtime`` — the code a device runs,
raw values in — on the test split, and compared with the host pipeline by
the runtime's own rule (:func:`edgeml_runtime.samples.compare`, the one a
device's self-test and ``edgeml verify`` apply), at a tolerance chosen here
and recorded in the manifest's ``verification`` entry, so that a device holds
the artifact to what the build did:

* classification: labels identical and probabilities within
  :data:`PROBA_TOLERANCE` (absolute). A row whose two most likely classes are
  closer than that is a tie, not a mismatch: float32 arithmetic may break it
  either way.
* regression: values within :data:`VALUE_RTOL` × the output's scale, the
  largest |value| the host pipeline gave on the compared rows
  (:func:`value_tolerance`). float32 carries about 7 significant digits of
  what it adds up, and an ensemble's output is a sum of many leaves, so its
  error follows the size of the terms, not each row's own value: an hourly
  count near 0, summed from leaves in the hundreds, is off by the rounding
  of the hundreds.

Example:

>>> t = value_tolerance(np.array([0.0, 3.0, -1019.0]))
>>> t.scale, f"{t.allowed:.3g}"
(1019.0, '0.0311')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.errors import VerificationError
from edgeml.verify.metrics import labels_of
from edgeml_runtime.manifest_artifacts import AbsoluteTolerance, RelativeTolerance, Tolerance
from edgeml_runtime.samples import Outputs, compare, score_rows

#: Largest allowed |probability difference| between artifact and host pipeline (and the gap of a near tie).
PROBA_TOLERANCE = AbsoluteTolerance(atol=1e-4)
#: float32's machine epsilon, 2**-23: the relative spacing of float32 numbers.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
#: How many float32 epsilons of the output's scale a regression value may be off by. Measured on derived
#: tables of scale 0.08 to 90,000 (counts from ccpp, mostly 0; concrete's strength / 1000; ccpp's PE) with
#: LightGBM (60 to 1,000 trees), XGBoost, random forests, extra trees, elastic nets and MLPs through ONNX,
#: ORT and TFLite (both tree forms): at most 22 epsilons, most under 10 (docs/bundle.md, "Parity"). 256
#: leaves a margin of ten for ensembles larger than those, while a leaf moved by 1e-4 of the scale fails.
VALUE_EPSILONS = 256
#: The relative tolerance of regression values: :data:`VALUE_EPSILONS` float32 epsilons, about 3.05e-5.
VALUE_RTOL = VALUE_EPSILONS * FLOAT32_EPS
#: The scale of outputs that are all 0: the smallest normal float32, so that they must stay (nearly) 0.
SMALLEST_SCALE = float(np.finfo(np.float32).tiny)


def value_tolerance(host_values: np.ndarray) -> RelativeTolerance:
    """The tolerance of regression values: :data:`VALUE_RTOL` of the largest |host value| on the compared rows."""
    scale = float(np.max(np.abs(np.asarray(host_values, dtype=np.float64)), initial=0.0))
    return RelativeTolerance(rtol=VALUE_RTOL, scale=max(scale, SMALLEST_SCALE))


@dataclass(frozen=True)
class Parity:
    artifact: str
    rows: int
    label_mismatches: int
    ties: int
    max_abs_diff: float  #: largest |probability or value difference|, in the output's units
    tolerance: Tolerance
    passed: bool

    def to_dict(self) -> dict:
        """The manifest's ``verification`` entry."""
        return {"artifact": self.artifact, "rows": self.rows, "label_mismatches": self.label_mismatches,
                "ties": self.ties, "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance.to_dict(),
                "passed": self.passed}


@dataclass(frozen=True)
class ArtifactScores:
    """What the runtime returned for the test split, with the parity verdict."""

    parity: Parity
    labels: np.ndarray
    probabilities: np.ndarray | None


def verify_artifact(bundle_dir: Path, artifact: str, raw_test: pd.DataFrame, host_output: np.ndarray,
                    task: str, classes: tuple, threshold: float | None = None) -> ArtifactScores:
    """Score ``raw_test`` with the artifact through the runtime and compare with ``host_output``.

    ``host_output`` is the host pipeline's ``predict_proba`` (classification)
    or ``predict`` (regression) on the same rows; ``threshold`` a binary
    bundle's decision threshold, which the expected labels follow.
    """
    got = score_rows(bundle_dir, artifact, {name: raw_test[name].tolist() for name in raw_test.columns},
                     draft=True)
    host = np.asarray(host_output, dtype=np.float64)
    if task == "classification":
        indices = labels_of(task, host, threshold)[0]
        expected = Outputs(labels=tuple(classes[i] for i in indices), probabilities=host)
        tolerance = PROBA_TOLERANCE
    else:
        expected = Outputs(values=host)
        tolerance = value_tolerance(expected.values)
    found = compare(expected, got, tolerance, classes, artifact=artifact, threshold=threshold)
    parity = Parity(artifact, found.rows, found.label_mismatches, found.ties, found.largest, tolerance, found.passed)
    if task == "classification":
        index = {c: i for i, c in enumerate(classes)}
        return ArtifactScores(parity, np.array([index[v] for v in got.labels]), got.probabilities)
    return ArtifactScores(parity, got.values, None)


def require_parity(parity: Parity) -> None:
    if not parity.passed:
        raise VerificationError(
            f"{parity.artifact} does not match the host pipeline on {parity.rows} test rows: "
            f"{parity.label_mismatches} label mismatch(es), largest difference {parity.max_abs_diff:.3g} "
            f"(allowed {parity.tolerance}). This is a bug in the exporter for this model; please report it "
            "with the bundle's manifest.json, and exclude the estimator from the target meanwhile"
        )
