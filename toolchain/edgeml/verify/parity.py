"""Check that an exported artifact computes what the host pipeline computes.

The artifact is scored through ``edgeml_runtime`` — the code a device runs,
raw values in — on the test split, and compared with the host pipeline by
the runtime's own rule (:func:`edgeml_runtime.samples.compare`, the one a
device's self-test and ``edgeml verify`` apply): labels must be identical and
probabilities (or regression values) within a stated tolerance. A row whose
two most likely classes are closer than the tolerance is a tie, not a
mismatch: float32 arithmetic may break it either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.errors import VerificationError
from edgeml_runtime.samples import Outputs, compare, score_rows

#: Largest allowed |probability difference| between artifact and host pipeline.
PROBA_TOLERANCE = 1e-4
#: Largest allowed regression difference, relative to max(1, |host value|).
VALUE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Parity:
    artifact: str
    rows: int
    label_mismatches: int
    ties: int
    max_abs_diff: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ArtifactScores:
    """What the runtime returned for the test split, with the parity verdict."""

    parity: Parity
    labels: np.ndarray
    probabilities: np.ndarray | None


def verify_artifact(bundle_dir: Path, artifact: str, raw_test: pd.DataFrame, host_output: np.ndarray,
                    task: str, classes: tuple) -> ArtifactScores:
    """Score ``raw_test`` with the artifact through the runtime and compare with ``host_output``.

    ``host_output`` is the host pipeline's ``predict_proba`` (classification)
    or ``predict`` (regression) on the same rows.
    """
    got = score_rows(bundle_dir, artifact, {name: raw_test[name].tolist() for name in raw_test.columns},
                     draft=True)
    if task == "classification":
        host = np.asarray(host_output, dtype=np.float64)
        expected = Outputs(labels=tuple(classes[i] for i in np.argmax(host, axis=1)), probabilities=host)
        tolerance = PROBA_TOLERANCE
    else:
        expected = Outputs(values=np.asarray(host_output, dtype=np.float64))
        tolerance = VALUE_TOLERANCE
    found = compare(expected, got, tolerance, classes, artifact=artifact)
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
            f"(allowed {parity.tolerance:g}). This is a bug in the exporter for this model; please report it "
            "with the bundle's manifest.json, and exclude the estimator from the target meanwhile"
        )
