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

The registry also keeps each bundle's ``.tar.gz`` and its **versions**
(:mod:`.versions`): ``add --fleet`` makes the bundle a version of a fleet
(and cohort), with its lineage read from its manifest's provenance (the data
source, its SHA-256 and rows, the seed) and the trigger ``manual``;
``promote`` points the fleet's ``champion`` alias at a version, ``rollback``
makes the champion's predecessor champion again as a new version. With
``--tracking-uri`` (or ``$MLFLOW_TRACKING_URI``) each is also logged to
MLflow (:mod:`.tracking`).

The commands (the store's URL from ``--store``, ``$EDGEML_FLEET_STORE`` or
``[store] url`` of ``--config fleet.toml``; :mod:`.database`)::

    edgeml registry add dist/demo-1 --store sqlite:///fleet.db [--fleet plant-a [--cohort C] [--champion]]
    edgeml registry list [--fleet plant-a] [--cohort C] [--json]
    edgeml registry show 3 [--json]
    edgeml registry promote 3 --reason "better on last week's rows"
    edgeml registry rollback --fleet plant-a [--cohort C]

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from edgeml.errors import EdgeMLError


@dataclass(frozen=True)
class Registered:
    """What ``add_bundle`` did: the bundle's identity, name and version, whether it was new, how many windows
    already stored of it became known, and its manifest."""

    identity: str
    name: str
    version: str
    added: bool
    windows: int
    manifest: dict | None = field(default=None, repr=False, compare=False)  #: as verified

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
    """Verify the bundle at ``path`` and register it in ``store`` (:class:`~edgeml.fleet.store.Store`), keeping
    its archive once (:func:`.versions.keep_archive`)."""
    from .versions import keep_archive

    manifest, identity = verified_manifest(path)
    waiting = sum(n for (_, sha), n in store.unknown_bundles().items() if sha == identity)
    added = store.add_bundle(identity, manifest, source=str(Path(path).resolve()))
    keep_archive(store, identity, path)
    return Registered(identity, manifest["name"], manifest["version"], added, waiting, manifest)


def manual_lineage(manifest: dict) -> dict:
    """The lineage of a bundle added by hand: its manifest's provenance (the data it was made from, the seed, the
    learner) and the trigger ``manual``.

    >>> manual_lineage({"provenance": {"data": {"sha256": "ab", "rows": 10}, "seed": 3,
    ...                                "model": {"learner": "lgbm"}}})
    {'trigger': 'manual', 'data': {'sha256': 'ab', 'rows': 10}, 'seed': 3, 'learner': 'lgbm'}
    """
    provenance = manifest.get("provenance") or {}
    out = {"trigger": "manual", "data": provenance.get("data"), "seed": provenance.get("seed"),
           "learner": (provenance.get("model") or {}).get("learner")}
    return {k: v for k, v in out.items() if v is not None}


def list_bundles(store) -> list[dict]:
    """The registered bundles: ``bundle_sha256``, ``name``, ``version``, ``added`` (ISO 8601 UTC), ``source``."""
    return [{**b, "added": datetime.fromtimestamp(b["added"], UTC).isoformat(timespec="seconds")}
            for b in store.bundles()]


# -- the commands (registered in edgeml.cli) ---------------------------------------------------------

_STORE = click.option("--store", "store_flag", metavar="URL",
                      help="The fleet store: sqlite:///PATH or postgresql+psycopg://... [default: $EDGEML_FLEET_STORE, "
                           "[store] url of --config, else sqlite:///fleet.db]")
_CONFIG = click.option("--config", "config", type=click.Path(dir_okay=False),
                       help="fleet.toml, for its [store] url.")
_TRACKING = click.option("--tracking-uri", "tracking_uri", metavar="URI",
                         help="Also log to this MLflow tracking store (sqlite:///mlflow.db, file:..., http://...) "
                              "[default: $MLFLOW_TRACKING_URI; none when unset]")
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _open(store_flag, config):
    from .database import store_url
    from .store import Store

    return Store.open(store_url(store_flag, config))


def _tracking(uri):
    from .tracking import Tracking

    return Tracking.configured(uri)


def _fail(exc: EdgeMLError):
    click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
    sys.exit(exc.exit_code)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _named(v) -> str:
    """``v3 (demo 2, ab12cd34ef56)``: a version as the commands name it."""
    return f"v{v.version} ({v.name} {v.bundle_version}, {v.bundle_sha256[:12]})"


def _where(fleet: str, cohort: str) -> str:
    return f"fleet {fleet}" + (f" cohort {cohort}" if cohort else "")


@click.group()
def registry():
    """The bundles the fleet controller holds, their versions per fleet and cohort, and each one's champion.

    \b
    Examples:
      edgeml registry add dist/demo-1 --fleet plant-a --champion
      edgeml registry list --fleet plant-a
      edgeml registry show 3 --json
      edgeml registry promote 4 --reason "better on last week's rows"
      edgeml registry rollback --fleet plant-a
    """


@registry.command("add")
@click.argument("bundle", type=click.Path())
@click.option("--fleet", help="Also make the bundle a new version of this fleet (action 'added').")
@click.option("--cohort", default="", help="The fleet's cohort the version is for [default: the whole fleet].")
@click.option("--champion", "make_champion", is_flag=True, help="Promote the new version to champion (needs --fleet).")
@_STORE
@_CONFIG
@_TRACKING
def registry_add(bundle, fleet, cohort, make_champion, store_flag, config, tracking_uri):
    """Verify BUNDLE (a folder or .tar.gz) and keep its manifest, drift reference and archive under its identity;
    with --fleet, also a new version whose lineage is the bundle's provenance and the trigger 'manual'.

    \b
    Examples:
      edgeml registry add dist/demo-1 --store sqlite:///fleet.db
      edgeml registry add dist/demo-2 --fleet plant-a --champion
    """
    from . import versions

    if (make_champion or cohort) and not fleet:
        _fail(EdgeMLError("--champion and --cohort need --fleet: name the fleet the version is for"))
    try:
        tracking = _tracking(tracking_uri) if fleet else None
        with _open(store_flag, config) as store:
            done = add_bundle(store, bundle)
            click.echo(done.summary(), err=True)
            if not fleet:
                return
            made = versions.add_version(store, done.identity, fleet=fleet, cohort=cohort,
                                        lineage=manual_lineage(done.manifest),
                                        tracking=tracking)
            click.echo(f"{_where(fleet, cohort)}: new version {_named(made)}", err=True)
            if make_champion:
                _report_promotion(store, made.version, "added as champion", tracking)
    except EdgeMLError as exc:
        _fail(exc)


@registry.command("list")
@click.option("--fleet", help="Only this fleet's versions.")
@click.option("--cohort", help="Only this cohort's versions ('' for the whole fleet's).")
@_JSON
@_STORE
@_CONFIG
def registry_list(fleet, cohort, as_json, store_flag, config):
    """The versions (number, fleet, cohort, status, aliases, bundle, action, parent), then the registered
    bundles that are no fleet's version yet.

    \b
    Examples:
      edgeml registry list
      edgeml registry list --fleet plant-a --json
    """
    from . import versions

    try:
        with _open(store_flag, config) as store:
            made = versions.versions(store, fleet, cohort)
            used = {v.bundle_sha256 for v in versions.versions(store)}
            loose = [] if fleet or cohort is not None else [b for b in list_bundles(store)
                                                            if b["bundle_sha256"] not in used]
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"versions": [v.to_dict() for v in made], "unversioned": loose}, indent=2))
        return
    if made:
        click.echo(f"{'VERSION':>7}  {'FLEET':<12} {'COHORT':<10} {'STATUS':<10} {'ALIASES':<9} {'BUNDLE':<16} "
                   f"{'IDENTITY':<12}  {'ACTION':<11} PARENT")
    for v in made:
        click.echo(f"{v.version:>7}  {v.fleet:<12} {v.cohort or '-':<10} {v.status:<10} "
                   f"{','.join(v.aliases) or '-':<9} {v.name + ' ' + v.bundle_version:<16} {v.bundle_sha256[:12]}  "
                   f"{v.action:<11} {(v.parent or '-')[:12]}")
    if loose:
        click.echo(("\n" if made else "") + "bundles with no version (make one with edgeml registry add BUNDLE "
                   "--fleet F):")
    for b in loose:
        click.echo(f"  {b['bundle_sha256'][:12]}  {b['name']} {b['version']:<4} {b['added']}  {b['source']}")
    if not made and not loose:
        what = f"no versions of {_where(fleet, cohort or '')}" if fleet else "no bundles registered"
        click.echo(f"{what}; add one with edgeml registry add BUNDLE [--fleet F]", err=True)


@registry.command("show")
@click.argument("version", type=int)
@_JSON
@_STORE
@_CONFIG
def registry_show(version, as_json, store_flag, config):
    """Everything about VERSION: its bundle, fleet and cohort, status and aliases, how it came, and its lineage.

    \b
    Example:
      edgeml registry show 3
    """
    from . import versions

    try:
        with _open(store_flag, config) as store:
            v = versions.get(store, version)
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(v.to_dict(), indent=2))
        return
    lines = [f"version {v.version} of {_where(v.fleet, v.cohort)}",
             f"  bundle    {v.name} {v.bundle_version}  {v.bundle_sha256}",
             f"  status    {v.status}" + (f"  (aliases: {', '.join(v.aliases)})" if v.aliases else ""),
             f"  action    {v.action}  {_when(v.created)}",
             f"  parent    {v.parent or '-'}",
             "  lineage   " + json.dumps(v.lineage, indent=2).replace("\n", "\n            ")]
    click.echo("\n".join(lines))


@registry.command("promote")
@click.argument("version", type=int)
@click.option("--reason", default="promoted by hand", show_default=True, help="Why, kept in the lineage.")
@_STORE
@_CONFIG
@_TRACKING
def registry_promote(version, reason, store_flag, config, tracking_uri):
    """Make VERSION the champion of its fleet and cohort; the champion it replaces is retired.

    \b
    Example:
      edgeml registry promote 4 --reason "better on last week's rows"
    """
    try:
        with _open(store_flag, config) as store:
            _report_promotion(store, version, reason, _tracking(tracking_uri))
    except EdgeMLError as exc:
        _fail(exc)


def _report_promotion(store, version: int, reason: str, tracking) -> None:
    from . import versions

    chosen = versions.get(store, version)
    before = versions.champion(store, chosen.fleet, chosen.cohort)
    if before is not None and before.version == version:
        click.echo(f"{_where(chosen.fleet, chosen.cohort)}: {_named(chosen)} is already the champion; nothing changed")
        return
    versions.promote(store, version, reason=reason, tracking=tracking)
    old = _named(before) if before else "none"
    click.echo(f"{_where(chosen.fleet, chosen.cohort)}: champion {old} → {_named(chosen)}")


@registry.command("rollback")
@click.option("--fleet", required=True, help="The fleet whose champion to roll back.")
@click.option("--cohort", default="", help="Its cohort [default: the whole fleet].")
@click.option("--reason", default="rolled back by hand", show_default=True, help="Why, kept in the lineage.")
@_STORE
@_CONFIG
@_TRACKING
def registry_rollback(fleet, cohort, reason, store_flag, config, tracking_uri):
    """Make the champion's predecessor the champion again, as a new version (numbers only grow).

    \b
    Example:
      edgeml registry rollback --fleet plant-a
    """
    from . import versions

    try:
        with _open(store_flag, config) as store:
            before = versions.champion(store, fleet, cohort)
            made = versions.rollback(store, fleet, cohort, reason=reason, tracking=_tracking(tracking_uri))
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(f"{_where(fleet, cohort)}: champion {_named(before)} → {_named(made)}, a new version restoring "
               f"v{made.lineage['restores']}")
