"""The verify stage: every artifact scored through edgeml_runtime and compared with the host pipeline."""

from edgeml.verify.metrics import classification_metrics, regression_metrics
from edgeml.verify.parity import Parity, require_parity, verify_artifact
from edgeml.verify.samples import pick_samples, store_samples

__all__ = ["Parity", "classification_metrics", "pick_samples", "regression_metrics", "require_parity",
           "store_samples", "verify_artifact"]
