"""TFLite artifacts, as makers in the one artifact registry (:data:`edgeml.export.registry.ARTIFACTS`).

A TFLite file is written from the fitted pipeline itself (no ONNX-to-TFLite
conversion exists), so the makers read ``source.pipeline`` where the ONNX
makers read ``source.onnx``. On a target with an operator set
(``tflite_ops``) or a tensor-arena budget, a file that would not run there
or whose tensors would not fit is not applicable, with the reason. Whether
the file fits ``max_model_bytes``, and whether TensorFlow Lite Micro runs it
where the operator set says so, is checked by the verify stage
(:mod:`edgeml.verify.ship`) as for every artifact.
"""

from __future__ import annotations

from edgeml.errors import ExportError
from edgeml.export.inverse import split
from edgeml.export.registry import CompiledArtifact, CompileOptions, ExportSource, NotApplicable, register_artifact
from edgeml.export.tflite.pipeline import to_tflite
from edgeml.models.families import TFLITE_PRECISIONS


def make_tflite(source: ExportSource, options: CompileOptions, precision: str) -> CompiledArtifact:
    """``model[.<precision>].tflite`` for ``options.target``; :class:`NotApplicable` with the reason otherwise."""
    from edgeml.targets.opsets import load_op_set, problems

    target = options.target
    if source.pipeline is None or target is None:
        raise ExportError("a TFLite artifact is written from the fitted pipeline for a target profile; "
                          "pass ExportSource(pipeline=…, schema=…) and CompileOptions.from_target(…)")
    op_set = load_op_set(target.tflite_ops) if target.tflite_ops else None
    try:
        exp = to_tflite(source.pipeline, source.schema, source.task, source.classes, precision, options.calibration,
                        static_batch=bool(op_set and op_set.static_batch))
    except ExportError as exc:
        raise NotApplicable("tflite", precision, str(exc)) from None
    wrong = problems(exp.ops, exp.tensor_types, op_set) if op_set else []
    budgets = target.budgets
    planned = exp.details["planned_bytes"]
    if budgets.max_arena_bytes is not None and planned > budgets.max_arena_bytes:
        wrong.append(f"its tensors need {planned:,} bytes for one row, over budgets.max_arena_bytes "
                     f"{budgets.max_arena_bytes:,}")
    if wrong and split(source.pipeline.steps[-1][1])[1] is not None and "EXP" not in (op_set.ops if op_set else ()):
        wrong.append("a label learnt on a log scale is inverted inside the graph (EXP on float32 values), which "
                     "this set cannot run: search this target without the log-scale label")
    if wrong:
        raise NotApplicable("tflite", precision, f"not written for {target.name}: " + "; ".join(wrong))
    done = (f"{exp.family} pipeline written as TFLite builtin ops ({', '.join(exp.ops)})",)
    details = {"family": exp.family, **exp.details, "operators": list(exp.ops)}
    if op_set is not None:
        done += (f"every operator and tensor type is in the {op_set.name} set",)
        details["op_set"] = op_set.name
    return CompiledArtifact(exp.data, "tflite", precision, done, details, engine="litert")


def _maker(precision: str):
    def make(source: ExportSource, options: CompileOptions) -> CompiledArtifact:
        return make_tflite(source, options, precision)

    make.__name__ = f"make_tflite_{precision}"
    return make


for _precision in TFLITE_PRECISIONS:
    register_artifact("tflite", _precision, _maker(_precision))
