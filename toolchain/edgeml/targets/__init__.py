"""Hardware target profiles (TOML data, validated on load), the TFLite operator sets they name, and measuring a
trial on a target."""

from edgeml.targets.measure import TrialMeasure, target_budget
from edgeml.targets.profiles import TargetProfile, list_targets, load_target

__all__ = ["TargetProfile", "TrialMeasure", "list_targets", "load_target", "target_budget"]
