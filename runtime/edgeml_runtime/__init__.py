"""edgeml-runtime: score edgeml bundles on a device.

Needs numpy and an inference engine (onnxruntime, ``pip install
'edgeml-runtime[onnx]'``); never pandas, scikit-learn or the host toolchain.
"""

from .errors import BundleError, EdgeMLError, EngineError, InputError, RowError
from .model import Model, Predictions

__version__ = "0.1.0"

__all__ = ["BundleError", "EdgeMLError", "EngineError", "InputError", "Model", "Predictions", "RowError", "__version__"]
