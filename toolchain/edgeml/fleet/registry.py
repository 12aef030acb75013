"""The bundle registry: the bundles a fleet runs, held in the fleet store, so windows are judged against their own
reference.

A device's windows count rows into the bins of the drift reference of the
bundle it runs (``model.bundle_sha256`` in each window), so the controller
needs that reference: ``edgeml registry add BUNDLE`` reads a bundle with the
runtime's own loader (:mod:`edgeml_runtime.bundle`: the manifest read key by
key, every artifact, side file and the sample rows checked against the
manifest's sizes and SHA-256) and stores its manifest under its identity
(:attr:`edgeml_runtime.manifest.Manifest.identity`, the value devices
report). A bundle that does not verify is refused with the loader's error
and nothing is stored. Adding a bundle twice is a no-op.

Windows of a bundle the registry does not hold are stored all the same and
reported as unknown (``known`` is False, :meth:`.store.Store.unknown_bundles`);
``known`` is a join with the registry, not a stored flag, so adding the
bundle later makes them known at once.

The commands (the store's URL from ``--store``, ``$EDGEML_FLEET_STORE`` or
``[store] url`` of ``--config fleet.toml``; :mod:`.database`)::

    edgeml registry add dist/demo-1 --store sqlite:///fleet.db
    edgeml registry list [--json]

Example (a folder that is not a bundle is refused):

>>> import tempfile
>>> from edgeml.fleet.store import Store
>>> store = Store.open(f"sqlite:///{tempfile.mkdtemp()}/fleet.db")
>>> add_bundle(store, "no/such/bundle")
Traceback (most recent call last):
...
edgeml_runtime.errors.BundleError: no/such/bundle does not exist or is not a bundle folder or .tar.gz
>>> list_bundles(store)
[]
>>> store.close()
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from edgeml.errors import EdgeMLError


@dataclass(frozen=True)
class Registered:
    """What ``add_bundle`` did: the bundle's identity, name and version, whether it was new, and how many windows
    already stored of it became known."""

    identity: str
    name: str
    version: str
    added: bool
    windows: int

    def summary(self) -> str:
        what = "registered" if self.added else "was already registered:"
        known = f"; {self.windows:,} stored windows of it are now known" if self.added and self.windows else ""
        return f"{what} {self.name} version {self.version} ({self.identity[:12]}…){known}"


def verified_manifest(path: str | os.PathLike) -> tuple[dict, str]:
    """The manifest of the bundle at ``path`` (plain JSON) and its identity, once every file verifies.

    :class:`~edgeml_runtime.errors.BundleError` (naming the file and the fix)
    if the manifest is not valid, or a file it lists is missing or does not
    match its size and SHA-256.
    """
    from edgeml_runtime.bundle import open_bundle

    with open_bundle(path) as bundle:
        manifest = bundle.manifest()
        for artifact in manifest.artifacts:
            bundle.artifact(artifact)
        samples = manifest.samples
        bundle.read(samples.path, size=samples.bytes, sha256=samples.sha256, what=" (the sample rows)")
        return bundle.manifest_json(), manifest.identity


def add_bundle(store, path: str | os.PathLike) -> Registered:
    """Verify the bundle at ``path`` and register it in ``store`` (:class:`~edgeml.fleet.store.Store`)."""
    manifest, identity = verified_manifest(path)
    waiting = sum(n for (_, sha), n in store.unknown_bundles().items() if sha == identity)
    added = store.add_bundle(identity, manifest, source=str(Path(path).resolve()))
    return Registered(identity, manifest["name"], manifest["version"], added, waiting)


def list_bundles(store) -> list[dict]:
    """The registered bundles: ``bundle_sha256``, ``name``, ``version``, ``added`` (ISO 8601 UTC), ``source``."""
    return [{**b, "added": datetime.fromtimestamp(b["added"], UTC).isoformat(timespec="seconds")}
            for b in store.bundles()]


# -- the command (registered in edgeml.cli) ----------------------------------------------------------

_STORE = click.option("--store", "store_flag", metavar="URL",
                      help="The fleet store: sqlite:///PATH or postgresql+psycopg://... [default: $EDGEML_FLEET_STORE, "
                           "[store] url of --config, else sqlite:///fleet.db]")
_CONFIG = click.option("--config", "config", type=click.Path(dir_okay=False),
                       help="fleet.toml, for its [store] url.")


def _open(store_flag, config):
    from .database import store_url
    from .store import Store

    return Store.open(store_url(store_flag, config))


def _fail(exc: EdgeMLError):
    click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
    sys.exit(exc.exit_code)


@click.group()
def registry():
    """The bundles the fleet controller holds, to judge each device's windows against its bundle's reference."""


@registry.command("add")
@click.argument("bundle", type=click.Path())
@_STORE
@_CONFIG
def registry_add(bundle, store_flag, config):
    """Verify BUNDLE (a folder or .tar.gz) and store its manifest and drift reference under its identity.

    \b
    Example:
      edgeml registry add dist/demo-1 --store sqlite:///fleet.db
    """
    try:
        with _open(store_flag, config) as store:
            done = add_bundle(store, bundle)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(done.summary(), err=True)


@registry.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_STORE
@_CONFIG
def registry_list(as_json, store_flag, config):
    """The registered bundles: identity, name, version, when added, and the path it was added from."""
    try:
        with _open(store_flag, config) as store:
            bundles = list_bundles(store)
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(bundles, indent=2))
    for b in [] if as_json else bundles:
        click.echo(f"{b['bundle_sha256'][:12]}  {b['name']} {b['version']:<4} {b['added']}  {b['source']}")
    if not bundles and not as_json:
        click.echo("no bundles registered; add one with edgeml registry add BUNDLE", err=True)
