"""``manifest.json``, typed: one frozen dataclass per section, read strictly, written back as it was read.

Every section is a :class:`Section`: its fields say which key each is, what
kind of value it holds and whether the key may be left out. ``from_dict``
refuses a missing required key, an unknown key and a value of the wrong
kind, naming the section and the key (``manifest.json: artifacts[1].sha256
is missing; rebuild the bundle``), so a manifest is validated once, here;
``to_dict`` gives back the JSON the section was read from. The host builds
manifests from the same classes (``edgeml.bundle.writer``), and
``schemas/manifest.schema.json`` states the same layout as a JSON Schema.

The layout is described key by key in docs/bundle.md. The artifact sections
(``artifacts``, ``verification``, ``not_shipped`` and their parts) are in
:mod:`edgeml_runtime.manifest_artifacts` and importable from here too; the
records inside sections (input columns, drift reference entries, trials, a
transform's details) are in :mod:`edgeml_runtime.manifest_details`. Three
keys are left out only in the manifest the build writes while it verifies an
artifact (a draft: the runtime must load the artifact to measure it):
``test_metrics`` of that artifact, ``metrics.test`` until ``model.onnx`` is
measured, and ``samples`` until every artifact is verified. A bundle always
has them; the JSON Schema requires them.

Example:

>>> d = {"artifact": "model.onnx", "rows": 20, "label_mismatches": 0, "ties": 0, "max_abs_diff": 0.0,
...      "tolerance": {"kind": "absolute", "atol": 1e-4}, "passed": True}
>>> Verification.from_dict(d, "manifest.json: verification[0]").to_dict() == d
True
>>> Verification.from_dict({**d, "passed": "yes"}, "manifest.json: verification[0]")
Traceback (most recent call last):
...
edgeml_runtime.errors.BundleError: manifest.json: verification[0].passed is 'yes', expected true or false; \
rebuild the bundle
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from .errors import BundleError
from .manifest_artifacts import (
    FORMATS,
    METRICS,
    TASK_TOLERANCES,
    AbsoluteTolerance,
    Artifact,
    Decision,
    MetricDrop,
    NotShipped,
    RelativeTolerance,
    Transform,
    Verification,
)
from .manifest_details import (
    CLASSES,
    COLUMN,
    CONFIG,
    DETAILS,
    INPUT_COLUMN_SCHEMA,
    INPUTS,
    OUTPUT,
    PRECISIONS,
    FileRef,
    SearchBudgets,
    Trial,
)
from .manifest_search import CandidateCost, FrontierCheck, SearchCandidate, SearchRefit, SearchValidation
from .schema import InputSchema
from .sections import (
    BOOL,
    BUNDLE_NAME,
    FILE_NAME,
    INT,
    NUMBER,
    SHA256,
    STR,
    Section,
    _show,
    key,
    list_of,
    mapping_of,
    matching,
    nullable,
    one_of,
    section,
)

#: The manifest layout this runtime reads. Bumped on incompatible changes: 2 made every section strict and
#: the sample rows required; 3 hashed an artifact's side files (``files``) and confined every path to a plain
#: file name in the bundle; 4 gave input columns a number format, a date order and their datetime parts, and
#: each verification its tolerance's rule (absolute, or relative to the output's scale).
MANIFEST_FORMAT = 4
TASKS = ("classification", "regression")
SAMPLE_SOURCES = ("test", "synthetic")


@dataclass(frozen=True, kw_only=True)
class Budgets(Section):
    """``target.budgets``: what the target profile allows (see docs/targets.md); null is no limit."""

    schema_name: ClassVar[str] = "budgets"
    max_model_bytes: int | None = key(nullable(INT))
    max_model_ram_mb: int | None = key(nullable(INT))
    max_arena_bytes: int | None = key(nullable(INT))
    latency_budget_ms: float | None = key(nullable(NUMBER))
    speed_factor: float | None = key(nullable(NUMBER))
    allowed_metric_drop: float = key(NUMBER)
    max_accuracy_drop: float = key(NUMBER)
    max_rmse_increase: float = key(NUMBER)


@dataclass(frozen=True, kw_only=True)
class Target(Section):
    """``target``: the resolved hardware target profile the bundle was built for."""

    schema_name: ClassVar[str] = "target"
    name: str = key(STR)
    description: str = key(STR)
    arch: str = key(STR)
    platform_tag: str = key(STR)
    cpu: str = key(STR)
    cores: int = key(INT)
    ram_mb: int = key(INT)
    formats: tuple[str, ...] = key(list_of(one_of(*FORMATS), min_items=1))
    precisions: tuple[str, ...] = key(list_of(one_of(*PRECISIONS), min_items=1))
    estimators: tuple[str, ...] = key(list_of(STR))
    providers: tuple[str, ...] = key(list_of(STR))
    ort_minimal: bool = key(BOOL)
    ort_optimization: str = key(STR)
    tflite_ops: str = key(STR)
    firmware: str | None = key(one_of("tflm", "c"), optional=True)  #: what `edgeml firmware` writes; absent before #21
    budgets: Budgets = key(section(Budgets))
    source: str = key(STR)


@dataclass(frozen=True, kw_only=True)
class Dropped(Section):
    """One of ``dropped``: a column left out of the model, and why."""

    schema_name: ClassVar[str] = "dropped"
    name: str = key(STR)
    reason: str = key(STR)


@dataclass(frozen=True, kw_only=True)
class Metrics(Section):
    """``metrics``: ``test`` through the runtime on the exported artifact, ``valid`` by the host pipeline."""

    schema_name: ClassVar[str] = "metrics"
    bundle_requires: ClassVar[tuple[str, ...]] = ("test",)
    test: dict | None = key(METRICS, optional=True)  # absent only in a draft (see the module docstring)
    valid: dict = key(METRICS)


@dataclass(frozen=True, kw_only=True)
class Reference(Section):
    """``reference``: the drift reference, one entry per input column and one for the output.

    :mod:`edgeml_runtime.drift` reads it as the plain mapping ``to_dict()``
    gives, valid because it was read here.
    """

    schema_name: ClassVar[str] = "reference"
    format: int = key(INT)
    bins: str = key(STR)
    rows: dict = key(mapping_of(INT))
    columns: dict[str, Section] = key(mapping_of(COLUMN))
    output: Section = key(OUTPUT)


@dataclass(frozen=True, kw_only=True)
class Search(Section):
    """``search``: the FLAML search that chose the model, its budgets and every trial it judged.

    ``best_config`` is the learner's hyperparameters: free names, JSON scalars.
    """

    schema_name: ClassVar[str] = "search"
    learners: tuple[str, ...] = key(list_of(STR))
    metric: str = key(STR)
    best_learner: str = key(STR)
    best_config: dict = key(CONFIG)
    best_valid_loss: float | None = key(nullable(NUMBER))
    best_model_bytes: int | None = key(nullable(INT))
    best_predicted_latency_ms: float | None = key(nullable(NUMBER))
    budgets: SearchBudgets = key(section(SearchBudgets))
    trials: int = key(INT)
    seconds: float = key(NUMBER)
    trial_log: tuple[Trial, ...] = key(list_of(section(Trial)))
    frontier: tuple[int, ...] = key(list_of(INT))
    validation: SearchValidation | None = key(section(SearchValidation), optional=True)  # absent before #12
    fitted_rows: int | None = key(INT, optional=True)  #: the rows the search's chosen model was refitted on
    refit: SearchRefit | None = key(section(SearchRefit), optional=True)
    frontier_check: FrontierCheck | None = key(section(FrontierCheck), optional=True)  #: absent before #12


@dataclass(frozen=True, kw_only=True)
class LabelOutlier(Section):
    """One of ``provenance.data.label_outliers``: a regression label the build left out as an entry error."""

    schema_name: ClassVar[str] = "label_outlier"
    row: int = key(INT)
    value: float = key(NUMBER)


@dataclass(frozen=True, kw_only=True)
class DataProvenance(Section):
    """``provenance.data``: the table the bundle was built from."""

    schema_name: ClassVar[str] = "data_provenance"
    source: str = key(STR)
    format: str = key(STR)
    sha256: str = key(SHA256)
    rows: int = key(INT)
    labelled_rows: int = key(INT)  #: the rows learnt from and tested on (label outliers left out)
    split: dict = key(mapping_of(INT))
    #: regression labels left out of the build as far outside the rest: data row (1 = the first) and value
    label_outliers: tuple[LabelOutlier, ...] | None = key(list_of(section(LabelOutlier)), optional=True)


@dataclass(frozen=True, kw_only=True)
class ModelProvenance(Section):
    """``provenance.model``: the chosen learner, its estimator class and configuration."""

    schema_name: ClassVar[str] = "model_provenance"
    learner: str = key(STR)
    estimator_class: str = key(STR, name="class")
    config: dict = key(CONFIG)


@dataclass(frozen=True, kw_only=True)
class Provenance(Section):
    """``provenance``: what the bundle was made from, with which seed and package versions."""

    schema_name: ClassVar[str] = "provenance"
    data: DataProvenance = key(section(DataProvenance))
    seed: int = key(INT)
    model: ModelProvenance = key(section(ModelProvenance))
    packages: dict = key(mapping_of(STR))


@dataclass(frozen=True, kw_only=True)
class Samples(Section):
    """``samples``: rows stored in the bundle with each artifact's expected outputs, for re-checks and self-tests."""

    schema_name: ClassVar[str] = "samples"
    path: str = key(FILE_NAME)
    bytes: int = key(INT)
    sha256: str = key(SHA256)
    rows: int = key(INT)
    source: str = key(one_of(*SAMPLE_SOURCES))



@dataclass(frozen=True, kw_only=True)
class Report(Section):
    """``report``: the build report for people, ``report.html`` (``html``) and the numbers it is drawn from,
    ``report.json`` (``data``); hashed like every file, and left out of device packages (no device reads them)."""

    schema_name: ClassVar[str] = "report"
    html: FileRef = key(section(FileRef))
    data: FileRef = key(section(FileRef))


# --- the whole manifest -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Manifest(Section):
    """The whole of ``manifest.json``; :func:`edgeml_runtime.bundle.read_manifest` reads one from a bundle.

    ``schema`` is the ``inputs`` section, ``classes`` an empty tuple for
    regression. ``samples`` is left out only in a draft (the build stores the
    samples after verifying every artifact); a bundle always has them.
    """

    schema_name: ClassVar[str] = "manifest"
    bundle_requires: ClassVar[tuple[str, ...]] = ("samples",)
    format_version: int = key(INT, default=MANIFEST_FORMAT)
    name: str = key(BUNDLE_NAME)
    version: str = key(matching(r"[0-9]+", "a version number as a string, e.g. \"3\""))
    created: str = key(matching(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "a UTC time such as 2024-05-01T12:00:00Z"))
    target: Target = key(section(Target))
    task: str = key(one_of(*TASKS))
    label: str = key(STR)
    schema: InputSchema = key(INPUTS, name="inputs")
    dropped: tuple[Dropped, ...] = key(list_of(section(Dropped)))
    classes: tuple = key(CLASSES)
    artifacts: tuple[Artifact, ...] = key(list_of(section(Artifact), min_items=1))
    metrics: Metrics = key(section(Metrics))
    verification: tuple[Verification, ...] = key(list_of(section(Verification)))
    not_shipped: tuple[NotShipped, ...] = key(list_of(section(NotShipped)))
    reference: Reference = key(section(Reference))
    search: Search = key(section(Search))
    provenance: Provenance = key(section(Provenance))
    samples: Samples | None = key(section(Samples), optional=True)  # absent only in a draft
    decision: Decision | None = key(section(Decision), optional=True)  # binary classification only
    report: Report | None = key(section(Report), optional=True)  # absent in bundles from before edgeml wrote one

    def __post_init__(self):
        if self.task == "classification" and not self.classes:
            raise BundleError("classes is empty, but a classification bundle lists its labels; rebuild the bundle")
        paths = self.files()
        twice = sorted({p for p in paths if paths.count(p) > 1})
        if twice:
            raise BundleError(f"artifacts lists {', '.join(twice)} more than once; rebuild the bundle")
        want = {"label", "probabilities"} if self.task == "classification" else {"value"}
        for i, a in enumerate(self.artifacts):
            if set(a.outputs) != want:
                raise BundleError(f"artifacts[{i}].outputs names {', '.join(a.outputs)}, but the artifact of a "
                                  f"{self.task} bundle gives {' and '.join(sorted(want))}; rebuild the bundle")
        self._check_tolerances()
        self._check_reference()
        if self.decision is not None and len(self.classes) != 2:
            raise BundleError(f"decision sets a threshold, but the bundle's {self.task} model has "
                              f"{len(self.classes)} classes: a threshold is for two classes only; rebuild the bundle")

    def _check_tolerances(self) -> None:
        """A classifier's artifacts are verified with an absolute tolerance, a regressor's with a relative one."""
        want = TASK_TOLERANCES[self.task]
        for i, v in enumerate(self.verification):
            if not isinstance(v.tolerance, want):
                raise BundleError(f"verification[{i}].tolerance is {v.tolerance.kind!r}, but a {self.task} bundle's "
                                  f"outputs are held to {want.schema_name.replace('_', ' ')}s; rebuild the bundle")

    def files(self) -> list[str]:
        """Every file the manifest lists besides itself: artifacts, their side files, the sample rows, the report."""
        paths = [p for a in self.artifacts for p in (a.path, *(f.path for f in (a.files or {}).values()))]
        paths += [self.samples.path] if self.samples is not None else []
        return paths + ([self.report.html.path, self.report.data.path] if self.report is not None else [])

    def unfinished(self) -> list[str]:
        """The keys a draft leaves out that this manifest lacks: none for a bundle a build finished."""
        missing = ["samples"] if self.samples is None else []
        missing += ["metrics.test"] if self.metrics.test is None else []
        return missing + [f"artifacts[{i}].test_metrics" for i, a in enumerate(self.artifacts)
                          if a.test_metrics is None]

    def _check_reference(self) -> None:
        """The drift reference describes each input column as ``inputs`` does, and the output as ``task`` does."""
        columns, inputs = self.reference.columns, self.schema.columns
        if list(columns) != [c.name for c in inputs]:
            raise BundleError(f"reference.columns describes {', '.join(columns) or 'no columns'}, but inputs are "
                              f"{', '.join(c.name for c in inputs)}: one entry per input column, in order; "
                              "rebuild the bundle")
        for c in inputs:
            if columns[c.name].kind != c.kind:
                raise BundleError(f"reference.columns[{c.name!r}].kind is {columns[c.name].kind!r}, but inputs "
                                  f"has {c.name!r} as a {c.kind} column; rebuild the bundle")
        output, kind = self.reference.output, "classes" if self.task == "classification" else "numeric"
        if output.kind != kind:
            raise BundleError(f"reference.output.kind is {output.kind!r}, but a {self.task} bundle's output is "
                              f"{kind!r}; rebuild the bundle")
        if kind == "classes" and tuple(output.classes) != tuple(self.classes):
            raise BundleError(f"reference.output.classes is {list(output.classes)!r}, but classes is "
                              f"{list(self.classes)!r}; rebuild the bundle")

    @property
    def formats(self) -> tuple[str, ...]:
        """The target profile's formats, in its order of preference."""
        return self.target.formats

    @cached_property
    def identity(self) -> str:
        """The bundle's identity: a sha256 over this manifest's canonical form (:func:`.protocol.bundle_sha256`)."""
        from .protocol.identity import bundle_sha256

        return bundle_sha256(self.to_dict())

    @classmethod
    def from_dict(cls, d, where: str = "manifest.json", *, draft: bool = False) -> Manifest:
        """Read a whole manifest; ``where`` names it in messages (the file's path).

        A draft (the manifest a build writes while it verifies artifacts) is
        refused unless ``draft``: it describes a bundle that is not finished,
        whose artifacts may not be verified yet. Only the build, loading its own
        staging folder, reads drafts.
        """
        if not isinstance(d, dict):
            raise BundleError(f"{where} does not hold a JSON object; rebuild the bundle")
        if "format_version" not in d:
            raise BundleError(f"{where}: format_version is missing; it was not written by edgeml build")
        if d["format_version"] != MANIFEST_FORMAT:
            raise BundleError(
                f"{where} has format_version {_show(d['format_version'])}; this runtime reads "
                f"{MANIFEST_FORMAT}. Install the edgeml-runtime release that matches the bundle"
            )
        try:
            manifest = super().from_dict(d, f"{where}: ")
        except BundleError as exc:
            if str(exc).startswith(where):
                raise
            raise BundleError(f"{where}: {exc}") from None
        missing = [] if draft else manifest.unfinished()
        if missing:
            raise BundleError(f"{where} is a draft: it lacks {', '.join(missing)}, which a build writes only once "
                              "every artifact is verified. The build that wrote it did not finish; rebuild the "
                              "bundle, or use the one the build moved into place")
        return manifest


#: Every section, by its name in the JSON Schema's ``$defs``.
SECTIONS: dict[str, type[Section]] = {s.schema_name: s for s in (
    Manifest, Target, Budgets, Dropped, Artifact, FileRef, Transform, MetricDrop, Metrics, Verification,
    AbsoluteTolerance, RelativeTolerance, NotShipped, Reference, Search, Provenance, DataProvenance, LabelOutlier,
    ModelProvenance, Samples, Decision, Report, *DETAILS,
    SearchValidation, SearchRefit, CandidateCost, SearchCandidate, FrontierCheck)}


def json_schema() -> dict:
    """``schemas/manifest.schema.json``, made from the sections (a test checks the file against this)."""
    defs = {name: cls.json_schema() for name, cls in SECTIONS.items()}
    defs["input_column"] = INPUT_COLUMN_SCHEMA
    defs["manifest"]["properties"]["format_version"] = {"const": MANIFEST_FORMAT}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "edgeml bundle manifest",
            "description": "manifest.json of an edgeml bundle, the contract between host and device. "
                           "See docs/bundle.md.",
            "$ref": "#/$defs/manifest", "$defs": defs}
