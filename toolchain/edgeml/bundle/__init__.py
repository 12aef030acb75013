"""The bundle stage: artifacts, the drift reference and ``manifest.json`` in a folder and a ``.tar.gz``."""

from edgeml.bundle.reference import build_reference
from edgeml.bundle.writer import finish, staging_dir, write_manifest

__all__ = ["build_reference", "finish", "staging_dir", "write_manifest"]
