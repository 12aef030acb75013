"""The export stage: the fitted pipeline as ONNX, then every artifact the target asks for, each verified.

Importing it loads every artifact maker into the one registry, :data:`edgeml.export.quantize.ARTIFACTS`: the
ONNX and ``.ort`` makers (registered in :mod:`edgeml.export.quantize`) and the TFLite ones (registered in
:mod:`edgeml.export.tflite.artifact`).
"""

from edgeml.export.artifacts import TestSplit, make_artifacts
from edgeml.export.onnx import align_thresholds, to_onnx
from edgeml.export.tflite import artifact as tflite_artifact

__all__ = ["TestSplit", "align_thresholds", "make_artifacts", "tflite_artifact", "to_onnx"]
