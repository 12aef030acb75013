"""The verify stage: every artifact scored through edgeml_runtime and compared with the host pipeline."""

from edgeml.verify.metrics import classification_metrics, regression_metrics
from edgeml.verify.parity import Parity, require_parity, verify_artifact

__all__ = ["Parity", "classification_metrics", "regression_metrics", "require_parity", "verify_artifact"]
