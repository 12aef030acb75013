"""Measuring a trial on a target: what one fitted model costs there, as a :class:`~edgeml.search.trials.Cost`.

The search (:func:`edgeml.search.automl.run_search`) takes a measuring
function and knows nothing of exporters; this module builds one from a target
profile. A :class:`TrialMeasure` called with a trial's fitted model returns:

* the one-row latency the cost model (:mod:`edgeml.search.costmodel`) predicts
  for this machine, times the profile's ``speed_factor``;
* the size of the model exported alone to ONNX (:func:`edgeml.export.onnx.estimator_bytes`),
  or, for a target whose preferred format is TFLite, of its TFLite file at the
  first of the target's precisions it maps at, plus what the data set's
  preprocessing adds (:meth:`TrialMeasure.for_target` measures that once);
  the cost model's estimate where the model cannot be exported at all;
* for TFLite, the tensor memory the graph plans and what keeps it off the
  target's operator set (:func:`edgeml.targets.opsets.problems`); where the
  set says ``verify_with = "tflite-micro"``, the file is run once in TFLite
  Micro's own interpreter, whose measured arena replaces the plan;
* for a profile whose firmware form is plain C (``firmware = "c"``), the size
  is the C form's flash instead: its const tables counted from the fitted
  model, what the data set's preprocessing and names add (measured once),
  and the code constant of the model's family
  (:func:`edgeml.export.c.size.model_c_bytes`), and its RAM (the float
  buffers of one row) is what ``max_arena_bytes`` bounds: no TFLite file is
  made for the trial, whose arena or operators would judge a form the device
  does not run. The bundle still gets a TFLite file for ``--form tflm`` where
  one fits the budgets; where none does, the C form is what runs
  (:func:`edgeml.verify.ship.require_something_runs`).

With ``predict`` (what ``edgeml build`` asks for), a TFLite-first target's
trials are not exported: :mod:`edgeml.targets.predict` builds the exporter's
graph from the model's shape and reads the size, arena and operators off it
(TFLite Micro's arena from its fitted tail), so a trial costs what its
structure costs to read. An ONNX-first target's trial takes the cost model's
size (:meth:`~edgeml.search.costmodel.CostModel.predict_bytes`) and is exported
only when that is at least :data:`EXPORT_NEAR` of ``max_model_bytes``: a size
far inside the budget needs no exact figure (the ONNX export of a small
linear model costs 40 ms, of a 100-tree forest 0.6 s, where FLAML fits
either in a few; on ccpp at 8 s, exporting every trial left 36 trials of the
97 an unmeasured search runs). :meth:`TrialMeasure.exact` is always the real
export; the search exports its frontier candidates with it before one ships
(:func:`edgeml.search.automl.run_search`). :attr:`TrialMeasure.exports`
counts the calls into an exporter.

Example::

    target = load_target("cortex-m7")
    run_search(..., budgets=target_budget(target), measure=TrialMeasure.for_target(target, data, predict=True))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgeml.errors import ExportError
from edgeml.search.trials import Cost, HardwareBudget

#: Under ``predict``, an ONNX trial whose predicted size is at least this share of ``max_model_bytes`` is exported:
#: the cost model's ONNX sizes are within a factor of two (a linear model's fixed overhead is its largest error).
EXPORT_NEAR = 0.5


@dataclass
class Exports:
    """How many times a measure called an exporter (TFLite: once per precision tried; ONNX: once per model).

    >>> e = Exports(); e.add().add().count
    2
    """

    count: int = 0

    def add(self) -> Exports:
        self.count += 1
        return self


@dataclass(frozen=True, eq=False)
class TrialMeasure:
    """A measuring function for the search: ``measure(model) -> Cost``.

    ``n_features`` is the width of the matrix the model is fitted on;
    ``n_inputs`` the raw inputs the exported graph takes (the runtime pays per
    input; ``None``: ``n_features``). ``calibration`` holds training rows for
    int8 TFLite. ``speed_factor`` is how many times slower than this machine
    the target runs. ``tflite_precisions`` are the precisions to measure a
    trial at, in order (the first one the model maps at counts; none: the size
    is the ONNX export's), ``tflite_ops`` the operator set it must map to
    (``""``: every builtin), ``tflite_overhead_bytes`` (precision, bytes) pairs:
    what the data set's preprocessing and metadata add to every model's TFLite
    file. ``max_arena_bytes`` only spares TFLite Micro a run for a model
    already over it; ``max_model_bytes`` says which predicted ONNX sizes are
    near enough the budget to export. ``predict``: predict trial costs (see
    the module docstring) instead of exporting; :meth:`exact` exports all the same.
    ``firmware`` ``"c"`` sizes a trial as its plain-C form, whose preprocessing,
    names and classes (``n_classes``) add ``c_overhead_bytes``.
    """

    task: str
    n_features: int
    n_inputs: int | None = None
    speed_factor: float = 1.0
    tflite_precisions: tuple[str, ...] = ()
    tflite_ops: str = ""
    max_arena_bytes: int | None = None
    max_model_bytes: int | None = None
    tflite_overhead_bytes: tuple[tuple[str, int], ...] = ()
    calibration: np.ndarray | None = None
    predict: bool = False
    firmware: str = "tflm"
    c_overhead_bytes: int = 0
    n_classes: int = 0
    exports: Exports = field(default_factory=Exports, repr=False)

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(f"TrialMeasure.task must be classification or regression, got {self.task!r}")
        if not self.speed_factor > 0:
            raise ValueError(f"TrialMeasure.speed_factor must be > 0, got {self.speed_factor!r}")

    @classmethod
    def for_target(cls, target, data, predict: bool = False) -> TrialMeasure:
        """The measure of trials fitted on ``data`` (:class:`~edgeml.data.prepare.Prepared`) for ``target`` (a
        :class:`~edgeml.targets.profiles.TargetProfile`): its speed factor and, for a target whose preferred
        format is TFLite, its precisions and operator set, with what the data set's preprocessing and metadata
        add to every TFLite file at each precision (trials are measured alone); ``predict`` as the class says."""
        X = data.X["train"]
        b = target.budgets
        measure = cls(data.task, int(X.shape[1]), len(data.inputs.features), b.speed_factor or 1.0,
                      max_arena_bytes=b.max_arena_bytes, max_model_bytes=b.max_model_bytes, predict=predict)
        if target.firmware == "c":  # its trials are sized as C, no TFLite file made
            from edgeml.export.c.size import preprocessing_c_bytes

            return replace(measure, firmware="c", n_classes=len(data.classes or ()),
                           c_overhead_bytes=preprocessing_c_bytes(data.preprocessor, data.inputs, data.classes))
        if target.formats[0] != "tflite":
            return measure
        from edgeml.export.tflite.pipeline import overhead_bytes

        # fp16 keeps the preprocessing in float32, so it adds what it adds to fp32.
        extra = {p: overhead_bytes(data.preprocessor, data.inputs, data.task, data.classes,
                                   "int8" if p == "int8" else "fp32", data.calibration)
                 for p in target.precisions}
        return replace(measure, tflite_precisions=tuple(target.precisions), tflite_ops=target.tflite_ops,
                       tflite_overhead_bytes=tuple(extra.items()), calibration=X)

    @property
    def predicts(self) -> bool:
        """Whether calling the measure predicts (as asked to) rather than exports."""
        return self.predict

    def __call__(self, model) -> Cost:
        """The trial's cost: predicted when :attr:`predicts`, else :meth:`exact`."""
        return self._cost(model, self.predicts)

    def exact(self, model) -> Cost:
        """The cost of ``model`` exported for real (and run in TFLite Micro where the operator set says so)."""
        return self._cost(model, False)

    def _cost(self, model, predicted: bool) -> Cost:
        from edgeml.search.costmodel import load_cost_model, structure_of

        costs = load_cost_model()
        structure = structure_of(model)
        latency = costs.predict_ms(structure, self.n_inputs or self.n_features, self.speed_factor)
        if self.firmware == "c":
            return self._in_c(model, latency)
        if self.tflite_precisions:
            cost, refusals = (self._predicted(model, structure, latency) if predicted
                              else self._tflite(model, latency))
            return cost or Cost(costs.predict_bytes(structure), latency, unmapped=refusals)
        from edgeml.export.onnx import estimator_bytes

        size = costs.predict_bytes(structure)
        if predicted and (self.max_model_bytes is None or size < EXPORT_NEAR * self.max_model_bytes):
            return Cost(size, latency)
        try:
            self.exports.add()
            size = estimator_bytes(model, self.n_features, self.task)
        except ExportError:
            pass  # the cost model's size stands
        return Cost(size, latency)

    def _in_c(self, model, latency: float) -> Cost:
        """The plain-C form's cost, where that is the profile's firmware form: its flash as the size, the float
        buffers of one row (on the stack) as the RAM ``max_arena_bytes`` bounds, and nothing unmapped: the C runs
        every node it is written from, and a TFLite file the device will not run judges nothing."""
        from edgeml.export.c.size import model_c_bytes

        try:
            flash, ram = model_c_bytes(model, self.n_features, self.task, self.n_classes)
        except ExportError as exc:
            return Cost(0, latency, unmapped=(f"plain C: {exc}",))
        return Cost(flash + self.c_overhead_bytes, latency, ram)

    def _predicted(self, model, structure, latency: float) -> tuple[Cost | None, tuple[str, ...]]:
        """:meth:`_tflite`'s answer predicted from the model's shape (:mod:`edgeml.targets.predict`): nothing
        is exported and TFLite Micro does not run (its arena is the fitted estimate of what it would report)."""
        from edgeml.export.tflite import micro as tflm
        from edgeml.targets.opsets import load_op_set, problems
        from edgeml.targets.predict import predict_tflite, tflm_arena, tflm_problems

        reasons, first = [], None
        overhead = dict(self.tflite_overhead_bytes)
        for precision in self.tflite_precisions:
            try:
                p = predict_tflite(model, self.n_features, self.task, precision, structure)
            except ExportError as exc:
                reasons.append(f"{precision}: {exc}")
                continue
            unmapped, arena = (), p.planned_bytes
            if self.tflite_ops:
                op_set = load_op_set(self.tflite_ops)
                unmapped = tuple(problems(p.ops, p.tensor_types, op_set))
                over = self.max_arena_bytes is not None and arena > self.max_arena_bytes  # as _tflite: no TFLM
                if not unmapped and not over and op_set.verify_with == "tflite-micro" and tflm.available():
                    unmapped, arena = tuple(tflm_problems(p)), tflm_arena(p)
            cost = Cost(p.model_bytes + overhead.get(precision, 0), latency, arena, unmapped)
            if not unmapped:
                return cost, ()
            first = first or cost
        return first, tuple(reasons)

    def _tflite(self, model, latency: float) -> tuple[Cost | None, tuple[str, ...]]:
        """The cost at the first precision the model maps at, else at the first it exports at (``None`` when it
        exports at none), and why it exports at none, one reason per precision."""
        from edgeml.export.tflite.pipeline import estimator_tflite
        from edgeml.models.estimators import model_steps
        from edgeml.targets.opsets import load_op_set, problems

        reasons, first = [], None
        overhead = dict(self.tflite_overhead_bytes)
        for precision in self.tflite_precisions:
            try:
                self.exports.add()
                exp = estimator_tflite(model_steps(model), self.n_features, self.task, precision, self.calibration)
            except ExportError as exc:
                reasons.append(f"{precision}: {exc}")
                continue
            unmapped, arena = (), exp.details["planned_bytes"]
            if self.tflite_ops:
                op_set = load_op_set(self.tflite_ops)
                unmapped = tuple(problems(exp.ops, exp.tensor_types, op_set))
                over = self.max_arena_bytes is not None and arena > self.max_arena_bytes
                if not unmapped and not over and op_set.verify_with == "tflite-micro":  # over: refused anyway
                    unmapped, arena = _tflm_cost(exp, arena)
            cost = Cost(len(exp.data) + overhead.get(precision, 0), latency, arena, unmapped)
            if not unmapped:
                return cost, ()
            first = first or cost  # the next precision may map
        return first, tuple(reasons)


def _tflm_cost(exp, planned: int) -> tuple[tuple[str, ...], int]:
    """Why TFLite Micro's own interpreter cannot run the trial's file (empty when it can), and the arena it needs.

    The arena is TFLM's measured head and tail times :data:`~edgeml.export.tflite.micro.SETUP_PEAK`
    (what preparing the graph needs at most, the ship stage bisects the real figure); where the package does not
    import, the planned tensor memory stands in.
    """
    from edgeml.export.tflite import micro as tflm

    if not tflm.available():
        return (), planned
    width = exp.details["input_width"]
    try:
        used = tflm.run(exp.data, np.zeros((1, width), np.int8 if exp.precision == "int8" else np.float32), planned)
    except ExportError as exc:
        return (str(exc),), planned
    return (), int(used.arena_bytes * tflm.SETUP_PEAK)  # the peak while preparing, not what stays allocated


def target_budget(target) -> HardwareBudget:
    """The limits every trial's model must fit in on ``target`` (a :class:`~edgeml.targets.profiles.TargetProfile`):
    its budgets, and the operator set where it prefers TFLite.

    >>> from edgeml.targets.profiles import load_target
    >>> target_budget(load_target("jetson-nano"))
    HardwareBudget(max_model_bytes=50000000, latency_budget_ms=5.0, max_arena_bytes=None, tflite_ops='')
    """
    b = target.budgets
    tflite_ops = target.tflite_ops if target.formats[0] == "tflite" else ""
    return HardwareBudget(b.max_model_bytes, b.latency_budget_ms, b.max_arena_bytes, tflite_ops)


__all__ = ["EXPORT_NEAR", "Exports", "TrialMeasure", "target_budget"]
