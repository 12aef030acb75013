"""TFLite without TensorFlow: the pipeline as builtin ops, TFLite Micro on the host, and firmware sources."""

from edgeml.export.tflite.pipeline import to_tflite

__all__ = ["to_tflite"]
