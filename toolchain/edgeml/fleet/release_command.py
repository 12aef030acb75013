"""``edgeml keys`` and ``edgeml release``: thin click commands over :mod:`.keys` and :mod:`.releases`.

Each parses its options, calls one library function and turns the project's
errors into one line on stderr and exit code 2 (registered in :mod:`edgeml.cli`).
"""

from __future__ import annotations

import json
import sys

import click

from edgeml.errors import EdgeMLError


def _fail(exc: EdgeMLError):
    click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
    sys.exit(exc.exit_code)


_DIR = click.argument("folder", metavar="DIR", type=click.Path(file_okay=False))
_ROOT_DAYS = click.option("--expires-days", type=click.FloatRange(min=0, min_open=True, max=3650), default=365,
                          show_default=True, help="root.json expires this many days from now: sign it again "
                                                  "(rotate) before then.")


@click.group()
def keys():
    """The keys that sign a fleet's releases: an offline root key, online release keys, and root.json.

    \b
    DIR holds root.key (0600: keep it offline; only init, rotate and revoke read it), root.pub (provision
    every device with it), root.json (signed by the root key: the release keys devices trust) and
    release-<keyid16>.key/.pub (edgeml release signs with the newest one not revoked).

    \b
    Examples:
      edgeml keys init keys/
      edgeml keys rotate keys/ --revoke-old
      edgeml keys revoke keys/ 3f2a9c01d4e5b6a7
      edgeml keys list keys/ --json
    """


@keys.command("init")
@_DIR
@_ROOT_DAYS
def keys_init(folder, expires_days):
    """Make a root key, a release key and root.json version 1 in DIR (created 0700). Refused if DIR holds keys."""
    from . import keys as k

    try:
        k.init(folder, expires_days=expires_days)
        made = k.list_keys(folder)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(f"keys in {folder}: root.key (keep it offline), root.pub (for the devices), root.json version 1, "
               f"release key {made[-1].keyid[:16]}", err=True)


@keys.command("rotate")
@_DIR
@click.option("--revoke-old", is_flag=True, help="Also revoke every earlier release key (releases they signed are "
              "refused from then on).")
@_ROOT_DAYS
def keys_rotate(folder, revoke_old, expires_days):
    """Make a new release key and sign root.json again (version + 1) listing it; the old keys stay trusted
    unless --revoke-old. Needs root.key in DIR."""
    from . import keys as k

    try:
        keyid = k.rotate(folder, revoke_old=revoke_old, expires_days=expires_days)
        version = k.root_version(folder)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(f"new release key {keyid[:16]}; root.json version {version}"
               + (" (earlier keys revoked)" if revoke_old else ""), err=True)


@keys.command("revoke")
@_DIR
@click.argument("keyid")
@_ROOT_DAYS
def keys_revoke(folder, keyid, expires_days):
    """Revoke release key KEYID (8 hex digits or more of its id) in a new root.json. Needs root.key in DIR."""
    from . import keys as k

    try:
        full = k.revoke(folder, keyid, expires_days=expires_days)
        version = k.root_version(folder)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(f"revoked release key {full[:16]}; root.json version {version}", err=True)


@keys.command("list")
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(folder, as_json):
    """The release keys root.json lists: id, status (active signs, listed is trusted, revoked) and whether the
    private key is in DIR."""
    from . import keys as k

    try:
        listed, root = k.list_keys(folder), k.root_envelope(folder)["signed"]
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"root_version": root["version"], "expires": root["expires"],
                               "keys": [x.to_dict() for x in listed]}, indent=2))
        return
    click.echo(f"root.json version {root['version']}, expires {root['expires']}")
    for x in listed:
        click.echo(f"{x.keyid[:16]}  {x.status:<8} {'private key here' if x.private else 'public only'}")


def _health(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


@click.command("release")
@click.argument("bundle")
@click.option("--fleet", required=True, metavar="NAME", help="The fleet the release is for.")
@click.option("--cohort", default="", metavar="NAME", help="A cohort of the fleet. [default: the whole fleet]")
@click.option("--keys", "keys_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The keys folder (edgeml keys init): signs with its newest release key.")
@click.option("--releases", "releases_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where release folders go: DIR/<fleet>/<version>/ (what edgeml fleet run --http serves). "
                   "[default: $EDGEML_FLEET_RELEASES, [controller] releases of --config, else releases]")
@click.option("--expires-days", type=click.FloatRange(min=0, min_open=True, max=3650), default=30,
              show_default=True, help="Devices refuse the release after this many days.")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), help="Health gate: most refused rows / rows. "
              "[default: 0.05]")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), help="Health gate: most mean "
              "one-row latency. [default: 50]")
@click.option("--min-windows", type=click.IntRange(min=1), help="Health gate: drift windows before a pass. "
              "[default: 2]")
@click.option("--min-rows", type=click.IntRange(min=1), help="Health gate: rows before a pass. [default: 200]")
@click.option("--max-crashes", type=click.IntRange(min=0), help="Health gate: restarts allowed while testing. "
              "[default: 0]")
@click.option("--store", "store_flag", metavar="URL", help="The fleet store. [default: $EDGEML_FLEET_STORE, "
              "[store] url of --config, else sqlite:///fleet.db]")
@click.option("--config", type=click.Path(dir_okay=False), help="fleet.toml, for its [store] url and [controller] "
              "releases.")
@click.option("--json", "as_json", is_flag=True, help="Print the release record (with the signed release) as JSON.")
def release(bundle, fleet, cohort, keys_dir, releases_dir, expires_days, store_flag, config, as_json, **health):
    """Sign the next release of FLEET for BUNDLE (a folder, a .tar.gz, or the identity of a bundle the registry
    keeps) and write its folder: release.json, root.json and bundle.tar.gz, which devices verify and fetch.

    \b
    Release versions are per fleet and only grow. A rollback is a new release of an older bundle:
      edgeml release <identity of the older bundle> --fleet plant-a --keys keys/

    \b
    Examples:
      edgeml keys init keys/
      edgeml release dist/demo-1 --fleet plant-a --keys keys/ --store sqlite:///fleet.db
      edgeml release dist/demo-2 --fleet plant-a --cohort line-2 --keys keys/ --min-rows 1000 --json
    """
    from .database import store_url
    from .releases import make_release
    from .settings import one
    from .store import Store

    try:
        releases_dir = one("releases", releases_dir, config)
        with Store.open(store_url(store_flag, config)) as store:
            made = make_release(store, bundle, fleet=fleet, cohort=cohort, keys_dir=keys_dir,
                                releases_dir=releases_dir, health=_health(**health), expires_days=expires_days)
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(made.to_dict(), indent=2))
        return
    b = made.signed["bundle"]
    click.echo(f"release {made.version} of fleet {fleet}{f' cohort {cohort}' if cohort else ''}: {b['name']} "
               f"{b['version']} ({made.identity[:12]}), expires {made.signed['expires']}, in {made.path}", err=True)


__all__ = ["keys", "release"]
