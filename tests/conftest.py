"""Shared fixtures: the real data sets, and bundles built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
BIN = Path(sys.executable).parent

AI4I_DROP = ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")


@pytest.fixture(scope="session", autouse=True)
def every_built_bundle_validates(tmp_path_factory):
    """After the session: the manifest of every bundle the tests built validates against manifest.schema.json.

    A built bundle is a folder with its ``.tar.gz`` beside it; the manifest is
    read from the archive, as built (tests may alter copies of the folder).
    """
    yield
    import json
    import tarfile
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("edgeml_runtime").joinpath("schemas/manifest.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems, checked = [], 0
    for archive in tmp_path_factory.getbasetemp().rglob("*.tar.gz"):
        name = archive.name.removesuffix(".tar.gz")
        with tarfile.open(archive) as tar:
            try:
                member = tar.extractfile(f"{name}/manifest.json")
            except KeyError:
                continue  # not a bundle archive
            manifest = json.load(member)
        checked += 1
        problems += [f"{archive}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                     for e in validator.iter_errors(manifest)]
    assert not problems, f"{len(problems)} schema violations in {checked} built bundles:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"real data sets not found at {DATASETS} (they live in the team's shared/ folder)")
    return DATASETS


def build_bundle(out: Path, **settings):
    from edgeml.build import build
    from edgeml.config import BuildConfig

    settings.setdefault("max_iter", 3)
    settings.setdefault("seed", 0)
    return build(BuildConfig(out=str(out), **settings))


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """A bundle of the built-in demo data (classification, numeric + categorical + datetime inputs)."""
    out = tmp_path_factory.mktemp("bundles") / "demo-1"
    build_bundle(out, estimators=("lgbm",))
    return out


@pytest.fixture(scope="session")
def demo_rows(tmp_path_factory) -> Path:
    from edgeml.data.demo import write_demo_csv

    return write_demo_csv(tmp_path_factory.mktemp("rows") / "rows.csv", rows=50, seed=11, label=False)


def write_csv(path: Path, rows: list[dict], fieldnames=None) -> Path:
    """Write ``rows`` as CSV (header from ``fieldnames`` or the first row; extra keys ignored)."""
    import csv

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fieldnames or rows[0]), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def run_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
