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
  of the hundreds. A label learnt on a log scale (the artifact's graph ends
  with ``expm1(z) + offset``) gets that tolerance widened by what ``exp``
  amplifies (:func:`log_value_tolerance`).

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


def value_tolerance(host_values: np.ndarray, inverse: tuple[str, float] | None = None) -> RelativeTolerance:
    """The tolerance of regression values: :data:`VALUE_RTOL` of the largest |host value| on the compared rows
    (widened by :func:`log_value_tolerance` for a label learnt as ``log1p(y - offset)``, ``inverse``)."""
    if inverse is not None:
        return log_value_tolerance(host_values, inverse[1])
    scale = float(np.max(np.abs(np.asarray(host_values, dtype=np.float64)), initial=0.0))
    return RelativeTolerance(rtol=VALUE_RTOL, scale=max(scale, SMALLEST_SCALE))


def log_value_tolerance(host_values: np.ndarray, offset: float) -> RelativeTolerance:
    """The tolerance of values ``y = expm1(z) + offset`` whose ``z`` the artifact computes in float32.

    ``z`` (the wrapped regressor's output) is held to the rule of every
    regressor: within ``VALUE_RTOL × Z``, ``Z`` its largest ``|z|`` on the
    rows. ``exp`` turns that absolute error of ``z`` into a relative one of
    ``y``: ``Δy ≈ (y - offset + 1) · Δz``; float32's own rounding of ``exp``
    adds a few epsilons of ``y - offset + 1``. So a row may be off by
    ``VALUE_RTOL × (1 + Z) × (Y + 1)``, ``Y`` the largest ``y - offset``:
    recorded, as every regression tolerance, as an ``rtol`` of the scale
    (the largest ``|y|``). A graph without the inverse, whose output is ``z``
    itself, is off by ``Y - Z``: outside it for any label spread beyond a few
    units.

    >>> t = log_value_tolerance(np.array([10.0, 1000.0, 99999.0]), offset=0.0)
    >>> t.scale, f"{t.rtol / VALUE_RTOL:.1f}", f"{t.allowed:.2f}"
    (99999.0, '12.5', '38.19')
    """
    y = np.asarray(host_values, dtype=np.float64)
    shifted = np.maximum(y - offset, -1 + FLOAT32_EPS) if y.size else np.zeros(1)
    top = float(shifted.max())
    z = float(np.max(np.abs(np.log1p(shifted))))
    scale = max(float(np.max(np.abs(y), initial=0.0)), SMALLEST_SCALE)
    return RelativeTolerance(rtol=VALUE_RTOL * (1 + z) * (top + 1) / scale, scale=scale)


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
                    task: str, classes: tuple, threshold: float | None = None,
                    inverse: tuple[str, float] | None = None, score=score_rows) -> ArtifactScores:
    """Score ``raw_test`` with the artifact through the runtime and compare with ``host_output``.

    ``host_output`` is the host pipeline's ``predict_proba`` (classification)
    or ``predict`` (regression) on the same rows; ``threshold`` a binary
    bundle's decision threshold, which the expected labels follow;
    ``inverse`` the label transform the artifact's graph inverts
    (:attr:`edgeml.export.registry.CompiledArtifact.inverse`), which widens
    the tolerance by what ``exp`` amplifies; ``score`` what computes the artifact's outputs (the runtime's
    :func:`~edgeml_runtime.samples.score_rows`, or one with the device's interpreter in it).
    """
    got = score(bundle_dir, artifact, {name: raw_test[name].tolist() for name in raw_test.columns},
                     draft=True)
    host = np.asarray(host_output, dtype=np.float64)
    if task == "classification":
        indices = labels_of(task, host, threshold)[0]
        expected = Outputs(labels=tuple(classes[i] for i in indices), probabilities=host)
        tolerance = PROBA_TOLERANCE
    else:
        expected = Outputs(values=host)
        tolerance = value_tolerance(expected.values, inverse)
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
