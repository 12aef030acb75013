"""The bundle stage: artifacts, the drift reference and ``manifest.json`` in a folder and a ``.tar.gz``."""

from edgeml.bundle.naming import check_name, default_name, destination, next_version
from edgeml.bundle.place import finish, locked, recover, staging_dir
from edgeml.bundle.provenance import package_versions, provenance_record
from edgeml.bundle.reference import build_reference
from edgeml.bundle.writer import BundleWriter

__all__ = ["BundleWriter", "build_reference", "check_name", "default_name", "destination", "finish", "next_version",
           "locked", "package_versions", "provenance_record", "recover", "staging_dir"]
