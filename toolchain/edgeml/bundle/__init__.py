"""The bundle stage: artifacts, the drift reference and ``manifest.json`` in a folder and a ``.tar.gz``."""

from edgeml.bundle.naming import default_name, destination, next_version
from edgeml.bundle.provenance import package_versions, provenance_record
from edgeml.bundle.reference import build_reference
from edgeml.bundle.writer import BundleWriter, finish, staging_dir

__all__ = ["BundleWriter", "build_reference", "default_name", "destination", "finish", "next_version",
           "package_versions", "provenance_record", "staging_dir"]
