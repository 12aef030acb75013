"""The export stage: the fitted pipeline as ONNX, then every artifact the target asks for (verified later, by
:mod:`edgeml.verify.ship`).

Every artifact maker registers in the one registry, :data:`edgeml.export.registry.ARTIFACTS`, at the bottom of
its own module; importing this package imports those modules: the ONNX and ``.ort`` makers
(:mod:`edgeml.export.quantize`) and the TFLite ones (:mod:`edgeml.export.tflite.artifact`).
"""

from edgeml.export import quantize
from edgeml.export.artifacts import Exported, make_artifacts, wanted
from edgeml.export.onnx import align_thresholds, to_onnx
from edgeml.export.tflite import artifact as tflite_artifact

__all__ = ["Exported", "align_thresholds", "make_artifacts", "quantize", "tflite_artifact", "to_onnx", "wanted"]
