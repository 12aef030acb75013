"""Hardware target profiles (TOML data, validated on load) and the TFLite operator sets they name."""

from edgeml.targets.profiles import TargetProfile, list_targets, load_target

__all__ = ["TargetProfile", "list_targets", "load_target"]
