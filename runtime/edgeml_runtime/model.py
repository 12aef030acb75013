"""Load a bundle and score records with it: the device's whole job.

Example (with a bundle written by ``edgeml build``)::

    from edgeml_runtime import Model
    model = Model.load("dist/demo")
    result = model.predict([{"air_temp_c": 24.1, "machine_type": "L", ...}])
    result.labels, result.probabilities
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from time import perf_counter

import numpy as np

from . import device
from .bundle import Bundle, open_bundle
from .cells import ABSENT, BadValue
from .drift import DriftMonitor, DriftSettings
from .engines import engine_for
from .errors import BundleError, EngineError, InputError, RowError
from .features import FeatureEncoder, few, scalar_reader
from .manifest import Artifact, Manifest
from .performance import PerformanceCounter

ON_ERROR = ("fail", "skip")
_ONE_ROW = np.zeros(1, dtype=np.int64)
_ONE_ROW.flags.writeable = False


@dataclass(slots=True)
class Predictions:
    """What :meth:`Model.predict` returns.

    ``rows`` are the 0-based positions of the scored records in the input;
    with ``on_error="skip"`` the others are described in ``errors``.
    ``labels`` are class labels as in the training data (classification) or
    predicted values (regression); ``probabilities`` has one column per
    entry of ``classes``. A binary bundle's labels follow its manifest's
    ``decision`` threshold (``classes[1]`` above it), whatever the artifact.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    classes: tuple
    rows: np.ndarray
    errors: tuple[RowError, ...] = ()
    ignored_columns: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.rows)


class Model:
    """A bundle loaded for scoring: its manifest, input checks and one engine.

    Set ``monitor`` (e.g. ``model.monitor = model.drift_monitor()``) and every
    prediction also updates it with the scored rows' model inputs, their
    outputs (class indices, or values) and the rows that could not be scored.
    A batch refused with ``on_error="fail"`` is not counted: the caller gets
    the error instead. A monitor is not thread-safe: share one between
    threads only under a lock.
    """

    def __init__(self, bundle_dir, manifest: Manifest, artifact: Artifact, engine):
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.artifact = artifact
        self.engine = engine
        self.encoder = FeatureEncoder(manifest.schema)
        self.classes = manifest.classes
        self._class_array = np.array(self.classes, dtype=object) if self.classes else None
        _check_engine(manifest, artifact, engine)
        names = engine.output_names
        if self.classes:
            self._out = (names.index(artifact.outputs["label"]), names.index(artifact.outputs["probabilities"]))
        else:
            self._out = (names.index(artifact.outputs["value"]), None)
        self._decision = manifest.decision  # a binary threshold: labels follow it, probabilities stay as they are
        self._input_names = set(manifest.schema.names)
        self._local = threading.local()
        self._monitor: DriftMonitor | None = None

    @classmethod
    def load(cls, bundle: str | os.PathLike | Bundle, *, artifact: str | None = None, precision: str | None = None,
             threads: int = 1, self_test: bool = True, draft: bool = False) -> Model:
        """Open a bundle folder or ``.tar.gz``, verify its artifacts, and start an engine.

        ``artifact`` picks one by its path in the manifest, ``precision`` one
        of that precision; by default the best for this device is used
        (:mod:`edgeml_runtime.device`), falling back to the next that runs.
        The engine gets the very bytes that were hashed. It must take the
        manifest's inputs and give its outputs, one probability per class;
        then it scores the bundle's sample rows, which must come out as they
        did at build time (:func:`edgeml_runtime.samples.check_loaded`): a
        manifest edited so that the model's outputs mean something else
        (``classes`` reordered, a category renamed) is refused here.
        ``self_test=False`` leaves that check to the caller (``edgeml verify``
        reports the differences instead); ``draft`` is for the build alone,
        verifying its staging folder before the sample rows exist.
        """
        with open_bundle(bundle, draft=draft) as folder:
            manifest = folder.manifest(draft=draft)
            caps = device.detect()
            if artifact is not None:
                candidates = [a for a in manifest.artifacts if a.path == artifact]
                if not candidates:
                    raise EngineError(
                        f"bundle {bundle} has no artifact {artifact!r}; it has "
                        f"{', '.join(a.path for a in manifest.artifacts)}"
                    )
            else:
                candidates = device.rank(manifest.artifacts, caps, precision, manifest.formats)
            problems = []
            for a in candidates:
                data = folder.artifact(a)
                try:
                    engine = engine_for(a.format)(data, threads=threads, providers=device.providers_for(a, caps),
                                                  name=f"{folder.source}: {a.path}")
                except EngineError as exc:
                    problems.append(f"{a.path}: {exc}")
                    continue
                model = cls(Path(folder.source), manifest, a, engine)
                if self_test and not draft:
                    from .samples import check_loaded

                    check_loaded(folder, model)
                return model
            raise EngineError("no artifact in the bundle can run here:\n  " + "\n  ".join(problems))

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def monitor(self) -> DriftMonitor | None:
        """The :class:`DriftMonitor` every prediction updates, or None (the default)."""
        return self._monitor

    @monitor.setter
    def monitor(self, monitor: DriftMonitor | None) -> None:
        # Swap the scoring step rather than test for a monitor on every call: without one, the hot path is unchanged.
        self._monitor = monitor
        if monitor is None:
            self.__dict__.pop("_run", None)
        else:
            self._run = self._run_monitored

    def drift_monitor(self, settings: DriftSettings | None = None, *, clock=time.time) -> DriftMonitor:
        """A new :class:`DriftMonitor` against this bundle's reference, with a
        :class:`~.performance.PerformanceCounter` for its task and classes; attach it with ``model.monitor = …``."""
        reference = self.manifest.reference.to_dict()
        if reference is None:
            raise BundleError(
                f"bundle {self.bundle_dir} has no drift reference (manifest key 'reference'); rebuild it with "
                "this edgeml version to monitor drift"
            )
        return DriftMonitor(reference, self.manifest.schema, settings or DriftSettings(), clock,
                            performance=PerformanceCounter(self.manifest.task, self.classes))

    def predict(self, records: Iterable[Mapping] | Mapping[str, Iterable], *, on_error: str = "fail",
                first_row: int = 1, row_numbers: Sequence[int] | None = None) -> Predictions:
        """Score records: a list of dicts (one per row), one dict of values, or a mapping of column name to values.

        ``on_error="fail"`` raises the first :class:`RowError`; ``"skip"``
        scores the other rows and reports the bad ones in ``errors``.
        Errors name rows by ``row_numbers`` (one per record) when given,
        else by position counted from ``first_row``.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        if type(records) is not list and isinstance(records, Mapping) and all(map(_is_scalar, records.values())):
            records = [records]  # one record, not columns
        if type(records) is list and len(records) == 1 and type(records[0]) is dict:
            result = self._predict_one(records[0])
            if result is not None:
                return result
        columns, n, ignored = self._columns(records, every_key=on_error == "skip")
        feeds, errors = self.encoder.encode(columns, n, first_row=first_row)
        if row_numbers is not None and errors:
            errors = {i: RowError(row_numbers[i], e.column, e.reason) for i, e in errors.items()}
        if errors and on_error == "fail":
            raise errors[min(errors)]
        rows = np.arange(n)
        if errors:
            keep = np.ones(n, dtype=bool)
            keep[list(errors)] = False
            rows = rows[keep]
            feeds = {k: v[keep] for k, v in feeds.items()}
        errors = tuple(errors[i] for i in sorted(errors))
        labels, proba = self._run(feeds, len(rows), errors)
        return Predictions(labels, proba, self.classes, rows, errors, ignored)

    def errors(self, records: list[Mapping], *, row_numbers: Sequence[int] | None = None) -> list[RowError]:
        """The records' row errors, found without scoring any (so no monitor counts them), by row."""
        columns, n, _ = self._columns(records, every_key=True)
        _, errors = self.encoder.encode(columns, n)
        numbers = row_numbers if row_numbers is not None else range(1, n + 1)
        return [RowError(numbers[i], e.column, e.reason) for i, e in sorted(errors.items())]

    def _columns(self, records, every_key: bool = False):
        if isinstance(records, Mapping):
            lengths = {len(v) for v in records.values()}
            if len(lengths) > 1:
                raise InputError(f"columns have different lengths: {sorted(lengths)}")
            ignored = tuple(k for k in records if k not in self._input_names)
            return records, (lengths.pop() if lengths else 0), ignored
        if not isinstance(records, list):
            records = list(records)
        columns = _values_by_column(records, self.manifest.schema.names, every_key)
        ignored = tuple(k for k in (records[0] if records else ()) if k not in self._input_names)
        return columns, len(records), ignored

    def _predict_one(self, record: dict) -> Predictions | None:
        """The hot path for a single record: reuse this thread's (1, 1) input buffers.

        Returns None when a value needs the general path's error handling.
        """
        try:
            plan, feeds = self._local.one
        except AttributeError:
            plan, feeds = self._local.one = self._one_record_plan()
        get = record.get
        try:
            for name, convert, buffers in plan:
                value = convert(get(name, ABSENT))
                if len(buffers) == 1:
                    buffers[0][0, 0] = value
                else:
                    for buf, part in zip(buffers, value, strict=False):
                        buf[0, 0] = part
        except BadValue:
            return None
        if len(record) == len(plan):
            ignored = ()
        else:  # the keys of a stream's records repeat: remember the last answer
            keys = tuple(record)
            last = getattr(self._local, "ignored", None)
            if last is None or last[0] != keys:
                last = self._local.ignored = (keys, tuple(k for k in keys if k not in self._input_names))
            ignored = last[1]
        labels, proba = self._run(feeds, 1)
        return Predictions(labels, proba, self.classes, _ONE_ROW, (), ignored)

    def _one_record_plan(self):
        feeds, plan = {}, []
        for col in self.manifest.schema.columns:
            dtype = object if col.kind == "categorical" else np.float32
            buffers = [feeds.setdefault(f, np.zeros((1, 1), dtype=dtype)) for f in col.features]
            plan.append((col.name, scalar_reader(col), buffers))
        return plan, feeds

    def _run(self, feeds, n, errors=()):
        """Score ready feeds. While a monitor is set, :meth:`_run_monitored` stands in (see :attr:`monitor`)."""
        if n == 0:
            k = len(self.classes)
            return np.empty(0, dtype=object if k else np.float32), (np.empty((0, k), np.float32) if k else None)
        out = self.engine.run(feeds)
        first, second = self._out
        if second is not None:
            return self._class_array[self._indices(out)], out[second]
        return out[first].ravel(), None

    def _indices(self, out) -> np.ndarray:
        """The class indices of an engine's outputs: the artifact's label, or the manifest's threshold on the
        positive probability (``decision``) when it sets one."""
        first, second = self._out
        if self._decision is None:
            return out[first].ravel()
        return self._decision.labels(np.asarray(out[second]))

    def _run_monitored(self, feeds, n, errors=()):
        if n == 0:
            if errors:
                self._monitor.update(feeds, np.empty(0), errors)
            return type(self)._run(self, feeds, n)
        started = perf_counter()
        out = self.engine.run(feeds)
        seconds = perf_counter() - started
        first, second = self._out
        value = self._indices(out) if second is not None else out[first].ravel()
        self._monitor.update(feeds, value, errors, seconds)
        return (self._class_array[value], out[second]) if second is not None else (value, None)


def _check_engine(manifest: Manifest, artifact: Artifact, engine) -> None:
    """Refuse, at load, an artifact that does not take the manifest's inputs or give its outputs (engines do not
    check per call): the same inputs, each of the kind its column gives, and one probability per class."""
    where = f"artifact {artifact.path}"
    taken, features = list(engine.input_names), manifest.schema.features
    for names, listed in ((features, "the manifest's inputs"), (artifact.inputs or taken, "its artifacts[].inputs")):
        unknown, unused = [n for n in taken if n not in names], [n for n in names if n not in taken]
        if unknown or unused:
            what = (f"{where} takes input(s) {few(unknown)} that {listed} do not produce" if unknown else
                    f"{listed} produce {few(unused)} that {where} does not take")
            raise BundleError(what + "; the manifest and the artifact do not belong together: rebuild the bundle")
    text = {f for c in manifest.schema.columns if c.kind == "categorical" for f in c.features}
    kinds = getattr(engine, "input_kinds", {})
    odd = [f for f in taken if f in kinds and kinds[f] != ("text" if f in text else "number")]
    if odd:
        raise BundleError(f"{where} takes {odd[0]!r} as {kinds[odd[0]]}, but the manifest's inputs give it as "
                          f"{'text' if odd[0] in text else 'a number'}; rebuild the bundle")
    absent = [n for n in artifact.outputs.values() if n not in engine.output_names]
    if absent:
        raise BundleError(f"{where} has no output {absent[0]!r} (its outputs are {few(engine.output_names)}); "
                          "the manifest's outputs do not fit the artifact: rebuild the bundle")
    if manifest.classes:
        width = getattr(engine, "output_widths", {}).get(artifact.outputs["probabilities"])
        if width is not None and width != len(manifest.classes):
            raise BundleError(f"classes lists {len(manifest.classes)} labels, but {where} gives {width} "
                              "probabilities; the manifest does not fit the artifact: rebuild the bundle")


def _values_by_column(records: list, names: Sequence[str], every_key: bool = False) -> dict[str, list]:
    """Each column's values in the records, :data:`ABSENT` where a record lacks the key.

    A column no record has is left out (then the encoder names it as missing), unless there is at most one
    record or ``every_key`` (``on_error="skip"``): then it is each record's error, and the other records of a
    stream still score. Plain dicts are read with ``itemgetter`` at C speed, a column at a time.
    """
    columns = {}
    exact = set(map(type, records)) == _DICT  # a dict subclass may have __missing__: ask it with .get
    for name in names:
        if exact:
            try:
                columns[name] = list(map(itemgetter(name), records))
                continue
            except KeyError:
                pass
        values = [r.get(name, ABSENT) for r in records]
        if every_key or len(records) <= 1 or not all(v is ABSENT for v in values):
            columns[name] = values
    return columns


_DICT = {dict}


def _is_scalar(v) -> bool:
    return isinstance(v, (str, bytes, int, float, bool)) or v is None or np.isscalar(v)
