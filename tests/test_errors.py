"""The error trees drawn in the two errors modules list every error class the packages define."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import edgeml
import edgeml.errors
import edgeml_runtime
import edgeml_runtime.errors
from edgeml_runtime.errors import EdgeMLError


def _import_all(package) -> None:
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)


def _subclasses(cls) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


@pytest.fixture(scope="module")
def errors() -> set[type]:
    _import_all(edgeml_runtime)
    _import_all(edgeml)
    return {cls for cls in _subclasses(EdgeMLError) if cls.__module__.split(".")[0] in ("edgeml", "edgeml_runtime")}


def test_the_host_drawing_lists_every_error_class(errors):
    drawn = edgeml.errors.__doc__
    missing = sorted(cls.__qualname__ for cls in errors if f"── {cls.__qualname__} " not in drawn)
    assert not missing, f"draw these in edgeml/errors.py's docstring: {missing}"


def test_the_runtime_drawing_lists_every_runtime_error_class(errors):
    drawn = edgeml_runtime.errors.__doc__
    runtime = {cls for cls in errors if cls.__module__.startswith("edgeml_runtime")}
    assert {"BundleError", "RowError", "SettingsError"} <= {cls.__qualname__ for cls in runtime}
    missing = sorted(cls.__qualname__ for cls in runtime if f"── {cls.__qualname__} " not in drawn)
    assert not missing, f"draw these in edgeml_runtime/errors.py's docstring: {missing}"
