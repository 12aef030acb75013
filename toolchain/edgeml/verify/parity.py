"""Check that an exported artifact computes what the host pipeline computes.

The artifact is scored through ``edgeml_runtime`` — the code a device runs,
raw values in — on the test split, and compared with the host pipeline:
labels must be identical and probabilities (or regression values) within a
stated tolerance. A row whose two most likely classes are closer than the
tolerance is a tie, not a mismatch: float32 arithmetic may break it either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.errors import VerificationError
from edgeml_runtime import Model

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
    model = Model.load(bundle_dir, artifact=artifact)
    columns = {name: raw_test[name].tolist() for name in model.manifest.schema.names}
    result = model.predict(columns)
    if task == "classification":
        index = {c: i for i, c in enumerate(classes)}
        got = np.array([index[v] for v in result.labels])
        want = np.argmax(host_output, axis=1)
        diff = np.abs(result.probabilities - host_output)
        top2 = np.sort(host_output, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= PROBA_TOLERANCE
        mismatch = (got != want) & ~tie
        max_diff = float(diff.max()) if diff.size else 0.0
        parity = Parity(artifact, len(got), int(mismatch.sum()), int(((got != want) & tie).sum()), max_diff,
                        PROBA_TOLERANCE, not mismatch.any() and max_diff <= PROBA_TOLERANCE)
        return ArtifactScores(parity, got, result.probabilities)
    values = np.asarray(result.labels, dtype=np.float64)
    host = np.asarray(host_output, dtype=np.float64).ravel()
    rel = np.abs(values - host) / np.maximum(1.0, np.abs(host))
    max_rel = float(rel.max()) if rel.size else 0.0
    parity = Parity(artifact, len(values), 0, 0, max_rel, VALUE_TOLERANCE, max_rel <= VALUE_TOLERANCE)
    return ArtifactScores(parity, values, None)


def require_parity(parity: Parity) -> None:
    if not parity.passed:
        raise VerificationError(
            f"{parity.artifact} does not match the host pipeline on {parity.rows} test rows: "
            f"{parity.label_mismatches} label mismatch(es), largest difference {parity.max_abs_diff:.3g} "
            f"(allowed {parity.tolerance:g}). This is a bug in the exporter for this model; please report it "
            "with the bundle's manifest.json, and exclude the estimator from the target meanwhile"
        )
