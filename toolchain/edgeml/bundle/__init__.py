"""The bundle stage: artifacts, the drift reference and ``manifest.json`` in a folder and a ``.tar.gz``."""

from edgeml.bundle.reference import build_reference
from edgeml.bundle.writer import BundleWriter, finish, staging_dir

__all__ = ["BundleWriter", "build_reference", "finish", "staging_dir"]
