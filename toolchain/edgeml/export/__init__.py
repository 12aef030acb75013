"""The export stage: the fitted pipeline as ONNX, then every artifact the target asks for, each verified."""

from edgeml.export.artifacts import TestSplit, make_artifacts
from edgeml.export.onnx import align_thresholds, to_onnx

__all__ = ["TestSplit", "align_thresholds", "make_artifacts", "to_onnx"]
