"""``edgeml fleet run``: the click command of the controller (thin: settings, then :func:`.controller.run`).

Every option is a key of :data:`.settings.KEYS` (its flag, its
``EDGEML_FLEET_*`` variable and its place in ``fleet.toml``); this module
only turns them into a :class:`~.settings.ControllerSettings` and the
project's errors into one line and an exit code.
"""

from __future__ import annotations

import logging
import sys

import click

from edgeml.errors import EdgeMLError

EPILOG = """\b
Example fleet.toml (every table optional; flags override EDGEML_FLEET_* variables, which override the file):
  [broker]
  url = "mqtts://broker.plant.local:8883"
  username = "controller"
  password_file = "/etc/edgeml/controller.password"
  ca_file = "/etc/edgeml/ca.crt"
  client_id = "edgeml-controller-1"   # stable: the broker keeps its session and queue
  group = "controllers"               # share the load with other controllers
  [store]
  url = "sqlite:////var/lib/edgeml/fleet.db"
  [controller]
  fleets = ["plant-a"]                # default: every fleet
  batch_size = 500
  batch_wait = 0.2
  workers = 2                         # commit in 2 processes beside the MQTT client
  releases = "/var/lib/edgeml/releases"   # served with http, announced by rollouts
  http = "0.0.0.0:8080"               # the release server (off loopback: a token)
  http_token_file = "/etc/edgeml/http.token"
  dashboard = "0.0.0.0:8080"          # the dashboard on that server (same address)
  rollout_every = 5
  [policy]
  judge_every = 10
  [trigger]                           # retrain on drift (see docs/fleet.md, Retraining)
  name = "command"                    # or "build" (with [retrain] and [promotion]), or "webhook"
  command = ["/usr/local/bin/retrain"]
  on = ["drift", "performance"]
  timeout = "1h"

\b
Environment: EDGEML_FLEET_BROKER, EDGEML_FLEET_STORE, EDGEML_FLEET_GROUP, EDGEML_FLEET_CLIENT_ID,
EDGEML_FLEET_USERNAME, EDGEML_FLEET_PASSWORD(_FILE), EDGEML_FLEET_FLEET (comma-separated),
EDGEML_FLEET_BATCH_SIZE, EDGEML_FLEET_JUDGE_EVERY, ... (EDGEML_FLEET_ + the flag's name).

\b
Examples:
  edgeml fleet run --config fleet.toml
  edgeml fleet run --broker mqtt://127.0.0.1:1883 --store sqlite:///fleet.db --judge-every 0
  edgeml fleet run --config fleet.toml --group controllers --client-id controller-2   # a second one
  edgeml fleet run --config fleet.toml --releases releases/ --http 0.0.0.0:8080 --http-token-file http.token
  edgeml fleet run --config fleet.toml --dashboard 127.0.0.1:8080   # then open http://127.0.0.1:8080/
"""


def _opt(name: str, help: str, **kwargs):
    from .settings import KEYS

    key = KEYS[name]
    return click.option(key.flag_name, name, help=f"{help} [{key.env_name}]", **kwargs)


@click.command("run", epilog=EPILOG)
@click.option("--config", type=click.Path(dir_okay=False), help="fleet.toml: [broker], [store], [controller], "
              "[policy], [trigger], [retrain], [promotion] (see below).")
@_opt("broker", "The broker: mqtt://host:1883 or mqtts://host:8883. [default: mqtt://127.0.0.1:1883]",
      metavar="URL")
@click.option("--store", metavar="URL", help="The fleet store: sqlite:///fleet.db (the default) or "
              "postgresql+psycopg://user@host/db. [EDGEML_FLEET_STORE]")
@_opt("fleets", "Hear only this fleet (repeatable). [default: every fleet]", multiple=True, metavar="NAME")
@_opt("group", "Share the load with the controllers of this group ($share/NAME/...).", metavar="NAME")
@_opt("client_id", "The MQTT client id, stable across restarts. [default: edgeml-controller-<host>]",
      metavar="ID")
@_opt("username", "The broker user.", metavar="USER")
@_opt("password_file", "A file holding the broker password (readable by its owner only).", metavar="FILE")
@_opt("ca_file", "The CA certificate (PEM) of an mqtts:// broker.", metavar="FILE")
@_opt("cert_file", "A client certificate (PEM).", metavar="FILE")
@_opt("key_file", "Its private key (PEM).", metavar="FILE")
@_opt("batch_size", "Messages committed in one transaction, then acknowledged. [default: 500]", type=int)
@_opt("batch_wait", "Seconds a batch waits to fill. [default: 0.2]", type=float)
@_opt("receive_maximum", "Unacknowledged messages the broker may send ahead. [default: 4 batches per worker, "
      "2000]", type=int)
@_opt("workers", "Processes that decode and commit batches, beside the MQTT client's: 2 or more use more "
      "cores. [default: 1, the controller's own]", type=int, metavar="N")
@_opt("lease_seconds", "How long the judge lease lasts unrenewed. [default: 30]", type=float)
@_opt("holder", "This controller's name in the judge lease. [default: the client id]", metavar="NAME")
@_opt("judge_every", "Seconds between judgements; 0 turns judging off. [default: the policy's, 10]",
      type=float, metavar="SECONDS")
@_opt("releases", "The release folders (edgeml release --releases): served with --http, announced by rollouts. "
      "[default: releases]", metavar="DIR")
@_opt("http", "Serve the release folders over HTTP on HOST:PORT (0.0.0.0:8080 needs --http-token-file). "
      "[default: no server]", metavar="HOST:PORT")
@_opt("dashboard", "Serve the dashboard (and the JSON API, /metrics) on HOST:PORT: the --http server's address "
      "if both are given. [default: no dashboard]", metavar="HOST:PORT")
@_opt("http_token_file", "A file holding the bearer token that clients off loopback must send (owner-only).",
      metavar="FILE")
@_opt("rollout_every", "Seconds between advances of the running rollouts (announce, judge waves); 0 turns "
      "them off. [default: 5]", metavar="SECONDS")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def run(config, store, log_level, **flags):
    """Hear every device of the fleet, store what it says (committed, then acknowledged), judge drift, advance
    rollouts (announcing releases) and, with --http, serve the release folders (with --dashboard, the dashboard).

    Long-running: stop it with SIGTERM or Ctrl-C (the batch in hand is committed and acknowledged first).
    """
    from .controller import run as run_controller
    from .settings import resolve

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    try:
        settings = resolve({**flags, "store": store}, config)
        sys.exit(run_controller(settings, log=logging.getLogger("edgeml.fleet")))
    except EdgeMLError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(exc.exit_code)


RETRAIN_EPILOG = """\b
The trigger comes from fleet.toml (see edgeml fleet run --help), e.g.:
  [trigger]
  name = "command"                    # or "build" (with [retrain] and [promotion]), or "webhook"
  command = ["/usr/local/bin/retrain", "--fast"]   # reads the evidence as JSON on stdin
  timeout = "1h"
  attempts = 2
  retry_after = "10m"

\b
Examples:
  edgeml fleet retrain --fleet plant-a --config fleet.toml
  edgeml fleet retrain --fleet plant-a --config fleet.toml --json
"""


@click.command("retrain", epilog=RETRAIN_EPILOG)
@click.option("--fleet", required=True, metavar="NAME", help="The fleet to retrain.")
@click.option("--cohort", default="", metavar="NAME", help="A cohort of the fleet. [default: the whole fleet]")
@click.option("--config", type=click.Path(dir_okay=False), help="fleet.toml: [trigger], [retrain], [promotion], "
              "[store].")
@click.option("--store", metavar="URL", help="The fleet store. [default: $EDGEML_FLEET_STORE, [store] url of "
              "--config, else sqlite:///fleet.db]")
@click.option("--json", "as_json", is_flag=True, help="Print the retrain's record as JSON.")
def retrain(fleet, cohort, config, store, as_json):
    """Retrain FLEET now, in the foreground: the same lease and records as the controller's retrains.

    Refused while another retrain of the fleet runs (it names the holder). Progress goes to stderr; the exit code
    is 0 when the retrain is done, promoted or rejected, 1 when it failed or timed out.
    """
    import json
    import os
    import socket

    from .retrain import run_now
    from .settings import resolve
    from .store import Store

    def said(row, text):
        click.echo(f"retrain #{row.id}: {text}", err=True)

    try:
        settings = resolve({"store": store}, config)
        holder = f"edgeml-fleet-retrain-{socket.gethostname()}-{os.getpid()}"
        with Store.open(settings.store) as opened:
            click.echo(f"retraining fleet {fleet} with the {settings.retraining.name} trigger as {holder}", err=True)
            done = run_now(opened, settings.store, settings.retraining, fleet, cohort, holder=holder,
                           lease_seconds=settings.lease_seconds, log=logging.getLogger("edgeml.fleet.cli"),
                           progress=said)
    except EdgeMLError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(exc.exit_code)
    seconds = done.result.get("seconds")
    click.echo(f"retrain #{done.id} of fleet {fleet}: {done.status}"
               f"{f' in {seconds:g} s' if seconds is not None else ''}{f': {done.error}' if done.error else ''}",
               err=True)
    if as_json:
        click.echo(json.dumps(done.to_dict(), indent=2, default=str))
    sys.exit(1 if done.status in ("failed", "timeout") else 0)
