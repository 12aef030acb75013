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


#: The bundles :func:`build_bundle` built in this session (each must be among those the schema check read).
BUILT: list[Path] = []


@pytest.fixture(autouse=True)
def no_controller_left_running():
    """After each test: kill the ``edgeml fleet run`` processes it started and did not stop (it failed first)."""
    yield
    import sys

    traffic = sys.modules.get("fleet_traffic")
    if traffic is not None:
        traffic.kill_leftovers()


@pytest.fixture(scope="session", autouse=True)
def every_built_bundle_validates(tmp_path_factory):
    """After the session: the manifest of every bundle the tests built validates against manifest.schema.json.

    A built bundle is a folder with its ``.tar.gz`` beside it; the manifest is
    read from the archive, as built (tests may alter copies of the folder).
    An archive holding a ``manifest.json`` elsewhere than ``<name>/`` is a
    problem, not a skip, and so is a session that built bundles of which this
    read none: the check never passes for having looked at nothing.
    """
    yield
    import json
    import tarfile
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("edgeml_runtime").joinpath("schemas/manifest.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    # pytest loads this file as tests.conftest; the tests import it (and call build_bundle) as conftest.
    from conftest import BUILT as built_here

    built = {out.parent / f"{out.name}.tar.gz": out for out in built_here if out.is_dir()}  # failed builds left none
    problems, checked = [], []
    for archive in tmp_path_factory.getbasetemp().rglob("*.tar.gz"):
        name = archive.name.removesuffix(".tar.gz")
        with tarfile.open(archive) as tar:
            manifests = [m for m in tar.getnames() if m.rsplit("/", 1)[-1] == "manifest.json"]
            if not manifests:
                continue  # not a bundle archive
            if archive not in built and f"{name}/manifest.json" not in manifests:
                name = manifests[0].split("/", 1)[0]  # a copy (a release's, a device's download) under another name
            if f"{name}/manifest.json" not in manifests:
                problems.append(f"{archive}: holds {manifests[0]}, not {name}/manifest.json as a bundle does")
                continue
            manifest = json.load(tar.extractfile(f"{name}/manifest.json"))
        checked.append(archive)
        problems += [f"{archive}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                     for e in validator.iter_errors(manifest)]
    unread = sorted(str(a) for a in set(built) - set(checked) if a.exists())
    assert not unread, f"the schema check did not read these built bundles: {', '.join(unread)}"
    assert not built or set(built) & set(checked), \
        f"{len(built)} bundles were built, but the schema check found the archive of none of them"
    assert not problems, (f"{len(problems)} schema violations in {len(checked)} built bundles:\n"
                          + "\n".join(problems[:20]))


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
    # A holdout unless a test asks otherwise: five fits a trial (and five more for the out-of-fold predictions)
    # made the build-heavy files five times slower. The default rule (``auto``) is built by the demo bundle
    # and tests/test_validation.py.
    settings.setdefault("validation", "holdout")
    BUILT.append(Path(out))
    return build(BuildConfig(out=str(out), **settings))


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """A bundle of the built-in demo data (classification, numeric + categorical + datetime inputs)."""
    out = tmp_path_factory.mktemp("bundles") / "demo-1"
    build_bundle(out, estimators=("lgbm",), validation="auto")
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


@pytest.fixture
def extra_learner():
    """A learner of the linear family registered for one test, unregistered after it."""
    from edgeml.models.learners import Learner, register_learner, unregister_learner

    learner = register_learner(Learner("lr_extra", "edgeml.models.estimators:StandardizedLRL2Classifier",
                                       ("classification",), "linear", "a learner registered by a test"))
    yield learner.name
    unregister_learner(learner.name)


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto of this test's own, with persistence (sessions and queued messages survive its restarts).

    Its log is printed at the end, which pytest shows when the test fails.
    """
    from broker import Broker

    b = Broker(tmp_path / "mosquitto", persistence=True)
    b.start()
    yield b
    b.stop()
    print(b.log())


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory):
    """A persistent anonymous Mosquitto with docs/mosquitto's fleet limits, one per test module (the controller's)."""
    from broker import require_mosquitto
    from fleet_traffic import fleet_broker

    require_mosquitto()
    b = fleet_broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server of this session's own (tests/pg.py), stopped and deleted at the end.

    Tests create a database each on it (``postgres.create_database(name)``).
    """
    from pg import Postgres, missing

    why = missing()
    if why:
        pytest.skip(why)
    server = Postgres().start()
    yield server
    server.stop()
