"""A bundle's sample rows and what each artifact computes on them (``samples.json``): read, score, compare.

``edgeml build`` stores at least 50 raw rows in every bundle, with each
shipped artifact's outputs on them (docs/bundle.md, "Sample rows"). A device
self-tests with them: :func:`self_test` scores the rows with every artifact
and :func:`compare` holds the fresh outputs against the stored ones. The host
uses the same two functions, at build time against its own pipeline and in
``edgeml verify``, so that one rule decides parity everywhere:

* labels equal, unless the row is a near tie: its two most likely expected
  classes are within the tolerance of each other, and float32 arithmetic may
  break it either way;
* probabilities within the (absolute) tolerance;
* regression values within ``rtol × scale`` of the expected ones: a
  :class:`~edgeml_runtime.manifest_artifacts.RelativeTolerance`, its scale
  being the output's (float32 rounds a sum to the size of its terms, not of
  each row's result).

The tolerance is the one the manifest's ``verification`` records for the
artifact, so that a device holds it to what the build did.

Example:

>>> want = Outputs(labels=("no", "yes"), probabilities=np.array([[0.9, 0.1], [0.50002, 0.49998]]))
>>> got = Outputs(labels=("no", "no"), probabilities=np.array([[0.9, 0.1], [0.49999, 0.50001]]))
>>> result = compare(want, got, AbsoluteTolerance(atol=1e-4), ("no", "yes"), artifact="model.onnx")
>>> result.passed, result.ties, result.label_mismatches
(True, 1, 0)
>>> scaled = RelativeTolerance(rtol=3e-5, scale=1000.0)  # 0.03 either way, near 0 as near 1000
>>> print(compare(Outputs(values=np.array([0.0, 990.0])), Outputs(values=np.array([0.02, 990.5])), scaled))
1 difference(s) on 2 rows: rows[1] value: got 990.5, expected 990 (allowed difference 0.03 = 3e-05 of the scale 1000)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .bundle import Bundle, open_bundle
from .errors import BundleError, EngineError, InputError
from .features import few
from .manifest import Manifest
from .manifest_artifacts import AbsoluteTolerance, RelativeTolerance, Tolerance
from .model import Model, Predictions

SAMPLES = "samples.json"
#: The layout of samples.json.
SAMPLES_FORMAT = 1
#: Differences named in a :class:`Comparison`'s message before "and N more".
SHOWN = 3


def float32_values(values) -> list[float]:
    """float32 values in their shortest decimal form (what reads back as the same float32).

    >>> float32_values([0.1, 1 / 3])
    [0.1, 0.33333334]
    """
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32).ravel()]


def _plain(v):
    """A label as JSON holds it (a NumPy scalar becomes the Python one)."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass(frozen=True, eq=False)
class Outputs:
    """What one artifact computes on the sample rows: ``labels`` and ``probabilities`` (one row per
    sample row, one column per class), or ``values`` for regression."""

    labels: tuple | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None

    def __post_init__(self):
        if (self.values is None) == (self.labels is None):
            raise ValueError("Outputs holds either labels and probabilities (classification) or values (regression)")
        if self.labels is not None:
            p = None if self.probabilities is None else np.asarray(self.probabilities)
            if p is not None and p.dtype.kind != "f":  # a float32 array from an engine stays as it is
                p = p.astype(np.float64)
            if p is None or p.ndim != 2 or len(p) != len(self.labels):
                raise ValueError(f"{len(self.labels)} labels need probabilities of shape ({len(self.labels)}, "
                                 f"classes), not {None if p is None else p.shape}")
            object.__setattr__(self, "labels", tuple(map(_plain, self.labels)))
            object.__setattr__(self, "probabilities", p)
        else:
            object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float64).ravel())

    def __len__(self) -> int:
        return len(self.values) if self.labels is None else len(self.labels)

    @classmethod
    def of(cls, predictions: Predictions) -> Outputs:
        """What :meth:`Model.predict` returned, as outputs."""
        if predictions.probabilities is None:
            return cls(values=predictions.labels)
        return cls(labels=tuple(predictions.labels), probabilities=predictions.probabilities)

    def to_dict(self) -> dict:
        """As samples.json stores them: numbers as float32 in their shortest decimal form."""
        if self.labels is None:
            return {"values": float32_values(self.values)}
        return {"labels": list(self.labels), "probabilities": [float32_values(row) for row in self.probabilities]}

    @classmethod
    def from_dict(cls, d, where: str) -> Outputs:
        """Read one artifact's stored outputs; a malformed entry is a :class:`BundleError` naming ``where``."""
        try:
            if isinstance(d, dict) and set(d) == {"values"}:
                return cls(values=np.asarray(d["values"], dtype=np.float64))
            if isinstance(d, dict) and set(d) == {"labels", "probabilities"} and isinstance(d["labels"], list):
                return cls(labels=tuple(d["labels"]), probabilities=np.asarray(d["probabilities"], dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where} is malformed ({exc}); rebuild the bundle") from None
        raise BundleError(f"{where} must be {{\"labels\": [...], \"probabilities\": [[...], ...]}} or "
                          "{\"values\": [...]}; rebuild the bundle")


@dataclass(frozen=True)
class Samples:
    """The contents of ``samples.json``: raw ``rows`` keyed by ``columns``, and per artifact path what it
    computes on them."""

    source: str  #: "test" or "synthetic"
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    expected: Mapping[str, Outputs] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        bad = [i for i, r in enumerate(self.rows) if not isinstance(r, dict) or set(self.columns) - set(r)]
        if bad:
            raise BundleError(f"{SAMPLES}: rows[{bad[0]}] is not an object with every column "
                              f"({few(self.columns)}); rebuild the bundle")
        short = [a for a, out in self.expected.items() if len(out) != len(self.rows)]
        if short:
            raise BundleError(f"{SAMPLES}: expected[{short[0]!r}] holds outputs for {len(self.expected[short[0]])} "
                              f"rows, not {len(self.rows)}; rebuild the bundle")

    def outputs_for(self, artifact: str) -> Outputs:
        if artifact not in self.expected:
            raise BundleError(f"{SAMPLES} holds no expected outputs for {artifact} (it has {few(list(self.expected))});"
                              " rebuild the bundle")
        return self.expected[artifact]

    def to_dict(self) -> dict:
        return {"format": SAMPLES_FORMAT, "source": self.source, "seed": self.seed, "columns": list(self.columns),
                "rows": list(self.rows), "expected": {a: out.to_dict() for a, out in self.expected.items()}}

    @classmethod
    def from_dict(cls, doc, where: str = SAMPLES) -> Samples:
        """Checked for shape; a malformed file is a :class:`BundleError` naming what is wrong."""
        if not isinstance(doc, dict) or doc.get("format") != SAMPLES_FORMAT:
            raise BundleError(f"{where} is not a samples file of format {SAMPLES_FORMAT}; rebuild the bundle")
        try:
            columns, rows, expected = tuple(doc["columns"]), tuple(doc["rows"]), dict(doc["expected"])
            source, seed = doc["source"], doc.get("seed", 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where} lacks or misshapes {exc}; rebuild the bundle") from None
        outputs = {a: Outputs.from_dict(d, f"{where}: expected[{a!r}]") for a, d in expected.items()}
        return cls(source, columns, rows, outputs, seed)


def read_samples(folder: os.PathLike | Bundle, manifest: Manifest) -> Samples:
    """The bundle's samples file, as the manifest's ``samples`` section names it, checked against its hash."""
    section = manifest.samples
    if section is None:
        raise BundleError("the manifest has no 'samples' section, so there are no rows to score; rebuild the "
                          "bundle with a newer edgeml")
    with open_bundle(folder) as bundle:
        data = bundle.read(section.path, size=section.bytes, sha256=section.sha256)
        where = f"{bundle.source}/{section.path}"
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BundleError(f"{where} cannot be read as JSON ({exc}); copy the bundle again") from None
    return Samples.from_dict(doc, where=where)


def score_rows(folder: os.PathLike | Bundle, artifact: str, rows: Iterable[Mapping] | Mapping[str, Sequence], *,
               draft: bool = False) -> Outputs:
    """What ``artifact`` computes on ``rows`` (records, or columns by name; other columns are ignored).

    ``draft`` is for the build, scoring through the bundle it is still verifying.
    """
    model = Model.load(folder, artifact=artifact, self_test=False, draft=draft)
    return Outputs.of(model.predict(rows if isinstance(rows, Mapping) else list(rows)))


# --- the comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One output of one row that differs by more than allowed: ``output`` is ``label``, ``value`` or
    ``probabilities[j]``."""

    row: int
    output: str
    got: object
    expected: object
    allowed: str = ""  #: how much was allowed, in words ("" for a label)
    name: str = ""  #: the class a probability is for, e.g. " (class 'Yes')"

    def __str__(self) -> str:
        if self.output == "label":
            return f"rows[{self.row}] label: got {self.got!r}, expected {self.expected!r}"
        return (f"rows[{self.row}] {self.output}{self.name}: got {self.got:.6g}, expected {self.expected:.6g} "
                f"({self.allowed})")


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found: the differences, the near ties forgiven and the largest difference."""

    rows: int
    differences: tuple[Difference, ...]
    ties: int  #: rows whose labels differ inside a near tie (not differences)
    largest: float  #: largest |probability difference| or |value difference|, in the output's units
    tolerance: Tolerance
    artifact: str = ""

    @property
    def passed(self) -> bool:
        return not self.differences

    @property
    def label_mismatches(self) -> int:
        return sum(d.output == "label" for d in self.differences)

    def __str__(self) -> str:
        where = f"{self.artifact}: " if self.artifact else ""
        if self.passed:
            return f"{where}{self.rows} rows within {self.tolerance} (largest difference {self.largest:.2g})"
        return f"{where}{len(self.differences)} difference(s) on {self.rows} rows: " + few(
            [str(d) for d in self.differences], SHOWN, quote=False, sep="; ")


def compare(expected: Outputs, got: Outputs, tolerance: Tolerance, classes: Sequence = (), *,
            artifact: str = "", threshold: float | None = None) -> Comparison:
    """Hold fresh outputs against expected ones, one :class:`Difference` per row and output that differs.

    ``threshold`` is a binary bundle's decision threshold (the manifest's
    ``decision``): a near tie is then a positive probability within the
    tolerance of the threshold, not of the other class's. ``tolerance`` is an
    :class:`~edgeml_runtime.manifest_artifacts.AbsoluteTolerance` for labels and
    probabilities, a :class:`~edgeml_runtime.manifest_artifacts.RelativeTolerance` for values. A value that is
    not a number (NaN) differs from every other.
    """
    if len(expected) != len(got) or (expected.labels is None) != (got.labels is None):
        raise BundleError(f"{artifact or 'the artifact'} gives {_kind(got)} for {len(got)} rows where "
                          f"{_kind(expected)} for {len(expected)} rows are expected; rebuild the bundle")
    want_kind = AbsoluteTolerance if expected.labels is not None else RelativeTolerance
    if not isinstance(tolerance, want_kind):
        raise TypeError(f"{_kind(expected)} are compared with {want_kind.__name__}, not {tolerance!r}")
    limit, allowed = tolerance.allowed, f"allowed difference {tolerance}"
    if expected.labels is None:
        diff = np.abs(got.values - expected.values)
        found = tuple(Difference(int(i), "value", float(got.values[i]), float(expected.values[i]), allowed)
                      for i in np.flatnonzero(~(diff <= limit)))
        return Comparison(len(got), found, 0, _largest(diff), tolerance, artifact)
    want, have = expected.probabilities, got.probabilities
    if want.shape != have.shape:
        raise BundleError(f"{artifact or 'the artifact'} gives probabilities of shape {have.shape} where "
                          f"{want.shape} are expected; rebuild the bundle")
    tie = _near_ties(want, limit, threshold)
    differ = np.array([g != e for g, e in zip(got.labels, expected.labels, strict=True)], dtype=bool)
    found = [Difference(int(i), "label", got.labels[i], expected.labels[i]) for i in np.flatnonzero(differ & ~tie)]
    diff = np.abs(have - want)
    for i, j in zip(*np.nonzero(~(diff <= limit)), strict=True):
        name = f" (class {classes[j]!r})" if j < len(classes) else ""
        found.append(Difference(int(i), f"probabilities[{j}]", float(have[i, j]), float(want[i, j]), allowed, name))
    found.sort(key=lambda d: d.row)
    return Comparison(len(got), tuple(found), int((differ & tie).sum()), _largest(diff), tolerance, artifact)


def _near_ties(want: np.ndarray, limit: float, threshold: float | None) -> np.ndarray:
    """Rows whose expected label float32 arithmetic may flip: the two most likely classes within ``limit`` of
    each other, or (with a binary ``threshold``) the positive probability within ``limit`` of the threshold.

    >>> _near_ties(np.array([[0.5, 0.5], [0.7, 0.3], [0.8, 0.2]]), 1e-4, 0.3).tolist()
    [False, True, False]
    """
    if threshold is not None and want.shape[1] == 2:
        return np.abs(want[:, 1] - threshold) <= limit
    if want.shape[1] < 2:
        return np.zeros(len(want), dtype=bool)
    top2 = np.sort(want, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= limit


def _largest(diff: np.ndarray) -> float:
    """The largest difference, or infinity when one is not a number (NaN would hide in a maximum's record)."""
    return float("inf") if np.isnan(diff).any() else float(diff.max(initial=0.0))


def _kind(outputs: Outputs) -> str:
    return "values" if outputs.labels is None else f"{outputs.probabilities.shape[1]} class probabilities"


def threshold_of(manifest: Manifest) -> float | None:
    """The manifest's binary decision threshold, or ``None`` when its labels are argmax."""
    return None if manifest.decision is None else manifest.decision.threshold


def check_artifact(folder: os.PathLike, manifest: Manifest, samples: Samples, artifact: str) -> Comparison:
    """Score the sample rows with ``artifact`` and compare with its stored outputs, at the tolerance the
    manifest's ``verification`` records for it (a reduced-precision artifact is held to its own outputs)."""
    tolerances = {v.artifact: v.tolerance for v in manifest.verification}
    if artifact not in tolerances:
        raise BundleError(f"the manifest's 'verification' records no tolerance for {artifact}; rebuild the bundle")
    expected = samples.outputs_for(artifact)
    got = score_rows(folder, artifact, [{name: r[name] for name in samples.columns} for r in samples.rows])
    return compare(expected, got, tolerances[artifact], manifest.classes, artifact=artifact,
                   threshold=threshold_of(manifest))


def self_test(folder: os.PathLike | Bundle, manifest: Manifest) -> tuple[Comparison, ...]:
    """Every artifact of the bundle in ``folder`` against its stored outputs on the sample rows."""
    with open_bundle(folder) as bundle:
        samples = read_samples(bundle, manifest)
        return tuple(check_artifact(bundle, manifest, samples, a.path) for a in manifest.artifacts)


def check_loaded(bundle: Bundle, model: Model) -> Comparison:
    """A just-loaded model against its stored outputs on the sample rows: :meth:`Model.load` refuses it unless
    they agree (by :func:`compare`, at the tolerance the build verified it with).

    The sample rows and their outputs are hashed in the manifest, the model's
    bytes too; what the manifest says *around* them (``classes``, the
    inputs' categories and ranges) is not. Scoring the rows through the
    manifest as it now reads is what shows that it still means what it meant
    when they were stored: ``classes`` edited to ``[1, 0]`` inverts every
    label, and fails here.
    """
    manifest, artifact = model.manifest, model.artifact.path
    samples = read_samples(bundle, manifest)
    tolerances = {v.artifact: v.tolerance for v in manifest.verification}
    if artifact not in tolerances:
        raise BundleError(f"the manifest's 'verification' records no tolerance for {artifact}; rebuild the bundle")
    rows = [{name: r[name] for name in samples.columns} for r in samples.rows]
    try:
        got = Outputs.of(model.predict(rows))
    except (InputError, EngineError, IndexError, ValueError) as exc:
        raise BundleError(f"{bundle.source}: {artifact} cannot score the bundle's own sample rows ({exc}); the "
                          "manifest does not fit the artifact: copy the bundle again, or rebuild it") from None
    found = compare(samples.outputs_for(artifact), got, tolerances[artifact], manifest.classes, artifact=artifact,
                    threshold=threshold_of(manifest))
    if not found.passed:
        raise BundleError(f"{bundle.source}: {artifact} does not score the bundle's sample rows as it did at build "
                          f"time ({found}). The manifest or the samples were changed after the build: copy the "
                          "bundle again, or rebuild it")
    return found


__all__ = ["SAMPLES", "SAMPLES_FORMAT", "Comparison", "Difference", "Outputs", "Samples", "check_artifact",
           "check_loaded", "compare", "float32_values", "read_samples", "score_rows", "self_test", "threshold_of"]
