"""``edgeml rollout start|status|pause|resume|abort``: the click group of staged rollouts (thin: :mod:`.rollout`).

Shares, durations and counts are checked here as click parameter types, so a
bad value is a usage error (exit 2) naming the flag and the value; what the
library refuses (no such release, a rollout running already) is one line and
exit 2 as well. The running controller (``edgeml fleet run``) advances the
rollouts; these commands only write the store.
"""

from __future__ import annotations

import json

import click

from edgeml.errors import EdgeMLError, FleetError

from .registry import _CONFIG, _STORE, _fail, _open
from .rollout_verdict import parse_duration, parse_share, parse_waves

EPILOG = """\b
How a rollout goes:
  1. the canary (--canary of the fleet's known devices, at least one) is announced the release;
  2. a wave passes when every device of it reported a final step (committed, failed, rolled_back) and at most
     --abort-failure-rate of them failed; then the next wave (cumulative: --waves 25%,100% is up to a quarter
     of the fleet, then all of it) is announced;
  3. a wave fails when, of at least --min-executed executed devices (or the whole wave, if smaller), more than
     --abort-failure-rate failed, or when its error rate is above the devices not yet updated: the rollout is
     aborted and, with --keys and --releases, a new release of the previous bundle is signed and announced to
     every device announced so far;
  4. a wave still undecided after --wave-timeout pauses the rollout (edgeml rollout resume ID, or abort ID).

\b
Examples:
  edgeml rollout start 7 --fleet plant-a --keys keys/ --releases releases/ --store sqlite:///fleet.db
  edgeml rollout start 7 --fleet plant-a --canary 10% --waves 50%,100% --wave-timeout 2h
  edgeml rollout status --fleet plant-a
  edgeml rollout pause 3 && edgeml rollout resume 3
"""


class _Parsed(click.ParamType):
    """A click type that takes its value through one of :mod:`.rollout_verdict`'s parsers."""

    def __init__(self, name: str, parse):
        self.name, self._parse = name, parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        name = param.opts[0] if param is not None else self.name
        try:
            return self._parse(value, name)
        except FleetError as exc:  # click names the flag: "Invalid value for '--canary': '5x': not a share ..."
            self.fail(str(exc).removeprefix(f"{name} "), param, ctx)


SHARE = _Parsed("share", parse_share)
RATE = _Parsed("share", lambda v, n: parse_share(v, n, zero=True))
WAVES = _Parsed("shares", parse_waves)
DURATION = _Parsed("duration", parse_duration)


@click.group("rollout")
def rollout():
    """Staged rollouts of a signed release to a fleet: canary, waves, verdicts, automatic rollback.

    \b
    Examples:
      edgeml rollout start 7 --fleet plant-a --canary 5% --waves 25%,100% --keys keys/ --releases releases/
      edgeml rollout status --fleet plant-a
      edgeml rollout abort 3 --reason "field reports"
    """


@rollout.command("start", epilog=EPILOG)
@click.argument("release", type=click.IntRange(min=1))
@click.option("--fleet", required=True, metavar="NAME", help="The fleet to update (its release RELEASE must exist).")
@click.option("--canary", type=RATE, default="5%", show_default=True,
              help="The first wave: this share of the fleet's devices (at least one; 0 for no canary).")
@click.option("--waves", type=WAVES, default="25%,100%", show_default=True,
              help="Then these cumulative shares of the fleet, each above the one before, the last 100%.")
@click.option("--abort-failure-rate", type=RATE, default="10%", show_default=True,
              help="Abort (and roll back) when more than this share of a wave's executed devices failed.")
@click.option("--min-executed", type=click.IntRange(min=1), default=3, show_default=True,
              help="Judge a failure rate only once this many devices of the wave executed (or all of a smaller "
                   "wave).")
@click.option("--wave-timeout", type=DURATION, default="30m", show_default=True,
              help="Pause when a wave is still undecided this long after its first announcement (90s, 30m, 2h).")
@click.option("--keys", type=click.Path(file_okay=False), help="The release key folder, to sign a rollback.")
@click.option("--releases", "releases_dir", type=click.Path(file_okay=False),
              help="The release folders (what the controller serves), to write a rollback into. [default with "
                   "--keys: $EDGEML_FLEET_RELEASES, [controller] releases of --config, else releases]")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout as JSON.")
@_STORE
@_CONFIG
def start_command(release, fleet, canary, waves, abort_failure_rate, min_executed, wave_timeout, keys,
                  releases_dir, as_json, store_flag, config):
    """Start rolling RELEASE (its version number) out to --fleet, wave by wave."""
    from . import rollout as lib
    from .rollout_status import brief_line
    from .settings import one

    if keys is None and releases_dir is not None:
        _fail(FleetError("--releases needs --keys: a rollback release is signed with the keys and written to the "
                         "release folders; give both, or neither (then a failed wave is not rolled back)"))
    try:
        releases_dir = one("releases", releases_dir, config) if keys is not None else None
        with _open(store_flag, config) as store:
            made = lib.start(store, fleet=fleet, release=release, canary=canary, waves=waves,
                             abort_failure_rate=abort_failure_rate, min_executed=min_executed,
                             wave_timeout=wave_timeout, keys=keys, releases_dir=releases_dir)
            summary = lib.status(store, made.id)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(json.dumps(summary, indent=2) if as_json else brief_line(summary))
    if keys is None and not as_json:
        click.echo("note: without --keys and --releases a failed wave aborts the rollout but rolls nothing back",
                   err=True)


@rollout.command("status")
@click.argument("rollout_id", metavar="[ID]", type=click.IntRange(min=1), required=False)
@click.option("--fleet", metavar="NAME", help="The latest rollout of this fleet (with ID: check it is this one's).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (shape: edgeml.fleet.rollout_status).")
@_STORE
@_CONFIG
def status_command(rollout_id, fleet, as_json, store_flag, config):
    """A rollout: its state and reason, its waves, each device's last update step, every transition."""
    from . import rollout as lib
    from .rollout_status import render

    try:
        with _open(store_flag, config) as store:
            found = lib.status(store, rollout_id, fleet=fleet)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(json.dumps(found, indent=2) if as_json else render(found))


def _operator(name: str, verb: str, default_reason: str):
    @rollout.command(name, help=verb)
    @click.argument("rollout_id", metavar="ID", type=click.IntRange(min=1))
    @click.option("--reason", default=default_reason, show_default=True, help="Why, kept with the transition.")
    @_STORE
    @_CONFIG
    def command(rollout_id, reason, store_flag, config):
        from . import rollout as lib
        from .rollout_status import brief_line

        try:
            with _open(store_flag, config) as store:
                getattr(lib, name)(store, rollout_id, reason)
                click.echo(brief_line(lib.status(store, rollout_id)))
        except EdgeMLError as exc:
            _fail(exc)

    return command


pause_command = _operator("pause", "Pause a running rollout: nothing more is announced until resume.",
                          "paused by hand")
resume_command = _operator("resume", "Resume a paused rollout; its wave's timeout counts from now.",
                           "resumed by hand")
abort_command = _operator("abort", "End a running or paused rollout (the devices announced keep what they run).",
                          "aborted by hand")
