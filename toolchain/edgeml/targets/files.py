"""Where target profiles and operator sets are found on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeml.errors import TargetError

DEFAULTS_FILE = "_defaults.toml"
ENV_VAR = "EDGEML_TARGETS_DIR"


def targets_dir() -> Path:
    """Where built-in profiles live: ``$EDGEML_TARGETS_DIR``, the repo's ``targets/``, or the installed copy."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise TargetError(f"{ENV_VAR}={env} is not a directory; "
                              "point it at a folder of <name>.toml profiles or unset it")
        return path
    repo = Path(__file__).resolve().parents[3] / "targets"
    if (repo / DEFAULTS_FILE).is_file():
        return repo
    return Path(sys.prefix) / "share" / "edgeml" / "targets"
