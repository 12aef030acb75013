"""The text files of a device package: the systemd unit, the ``runtime.toml`` template, the install and
uninstall scripts and the README. Plain strings, written by :mod:`edgeml.package.layout`.

The unit runs under ``DynamicUser=yes``: systemd allocates a user for the service alone, so install.sh creates
no account, and the user owns nothing outside ``StateDirectory=edgeml`` (``/var/lib/edgeml``, kept across
restarts and upgrades: the outbox lives there). A board where the input comes from a serial port or GPIO adds
``SupplementaryGroups=dialout`` with ``systemctl edit edgeml-runtime``.

>>> "WatchdogSec=" in unit_text() and "LoadCredential=mqtt_password:/etc/edgeml/mqtt_password" in unit_text()
True
>>> "ExecReload=/bin/kill -HUP $MAINPID" in unit_text("serve") and "LoadCredential=token:" in unit_text("serve")
True
"""

from __future__ import annotations

UNIT_NAME = "edgeml-runtime.service"
SERVE_UNIT_NAME = "edgeml-runtime-serve.service"
PREFIX = "/opt/edgeml"
CONFDIR = "/etc/edgeml"


def unit_text(command: str = "run") -> str:
    """The systemd unit of ``edgeml-runtime run`` (:data:`UNIT_NAME`) or ``serve`` (:data:`SERVE_UNIT_NAME`);
    install.sh rewrites ``/opt/edgeml`` and ``/etc/edgeml`` when given other folders."""
    if command == "run":
        head = ("# edgeml runtime: scores records as they arrive and reports drift to the fleet (see runtime.toml).",
                "edgeml runtime (model scoring and drift telemetry)")
        extra = f"""\
# The MQTT password, readable by this service alone as $CREDENTIALS_DIRECTORY/mqtt_password. A broker without
# a password: `systemctl edit edgeml-runtime` and add an empty `LoadCredential=` under [Service].
LoadCredential=mqtt_password:{CONFDIR}/mqtt_password
"""
    else:
        head = ("# edgeml runtime over HTTP: answers predictions (Open Inference Protocol v2, /predict, /metrics) and\n"
                "# reports drift to the fleet; the [serve] table of runtime.toml.",
                "edgeml runtime HTTP server (online inference and drift telemetry)")
        extra = f"""\
# `systemctl reload` loads the bundle again (after an upgrade) and swaps it in without a failed request.
ExecReload=/bin/kill -HUP $MAINPID
# The bearer token every request but the health checks must carry (install.sh makes one), readable by this
# service alone as $CREDENTIALS_DIRECTORY/token. With a broker that needs a password, `systemctl edit
# {SERVE_UNIT_NAME}` and add LoadCredential=mqtt_password:{CONFDIR}/mqtt_password under [Service].
LoadCredential=token:{CONFDIR}/token
"""
    return f"""\
{head[0]}
[Unit]
Description={head[1]}
Documentation=https://github.com/edgeml/edgeml/blob/main/docs/device.md
Wants=network-online.target
After=network-online.target

[Service]
# The runtime sends READY=1 once it scores, WATCHDOG=1 every half WatchdogSec, STOPPING=1 on shutdown.
Type=notify
NotifyAccess=main
WatchdogSec=30s
ExecStart={PREFIX}/venv/bin/edgeml-runtime {command} {PREFIX}/bundle --config {CONFDIR}/runtime.toml
Restart=on-failure
RestartSec=5s
# A user of its own, made by systemd for this service; it writes only its state folder.
DynamicUser=yes
StateDirectory=edgeml
# The outbox (drift windows not yet acknowledged by the broker) goes under /var/lib/edgeml.
Environment=XDG_STATE_HOME=%S
WorkingDirectory=%S/edgeml
{extra}ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


#: The ``[update]`` table of the template (the keys run, serve and ``edgeml-runtime update`` share).
UPDATE_TABLE = """\
# Updates over the air (docs/device.md), for run and serve: on once update_root_key names the root public key
# this device trusts (root.pub from `edgeml keys init`). Releases are announced by the fleet controller and
# fetched from its HTTP server; a release copied by hand installs with `edgeml-runtime update FOLDER`.
[update]
# update_root_key = "/etc/edgeml/root.pub"
# update_server = "http://CHANGE-ME:8080"
# The controller's bearer token (it asks every client off its own machine for one): under systemd, add
# LoadCredential=update_token:/etc/edgeml/http.token (sudo systemctl edit edgeml-runtime); else a file:
# update_token_file = "/etc/edgeml/http.token"
# Trust state and bundle slots (the service may write only under /var/lib/edgeml); set it with update_root_key,
# so that `edgeml-runtime update` by hand works on the same folder as the service.
# update_dir = "/var/lib/edgeml/update"
# This board has no real-time clock: judge expiry against the newest signed time seen.
# update_no_clock = false
# Automatic rollbacks after which releases wait for one installed by hand.
# update_max_rollbacks = 3
"""


def config_template(bundle_name: str) -> str:
    """``runtime.toml`` for ``/etc/edgeml/``: the ``[run]`` table of ``edgeml-runtime run``, every key explained."""
    return f"""\
# /etc/edgeml/runtime.toml: the settings of `edgeml-runtime run` (bundle {bundle_name}).
# Every key is also a flag (--device-id) and an environment variable (EDGEML_DEVICE_ID); see
# `edgeml-runtime run --help`. After a change: sudo systemctl restart edgeml-runtime
[run]
# FILL IN: this device's id, unique in the fleet (one MQTT topic level: letters, digits, '-', '_').
device_id = "CHANGE-ME"
# FILL IN: the fleet's name (the MQTT topic level above the device).
fleet = "CHANGE-ME"
# FILL IN: the MQTT broker, mqtt://host:1883, or mqtts://host:8883 for TLS.
broker = "mqtt://CHANGE-ME:1883"
# MQTT user name. The password is not written here: put it in /etc/edgeml/mqtt_password (mode 600), which
# the service reads as a systemd credential.
# mqtt_username = "pi-07"
# CA certificate (PEM) that signed the broker's certificate, for mqtts://.
# mqtt_ca_file = "/etc/edgeml/ca.pem"

# Where records come from. By default, JSON Lines messages (one record, or several lines) on this MQTT topic:
input_topic = "edgeml-input/CHANGE-ME"
# Or a file another process appends to (CSV or JSON Lines, from its name): remove input_topic and set
# input = "/var/lib/edgeml/records.jsonl"
# follow = true
# The input format, when the file name does not tell: "jsonl" or "csv".
# format = "jsonl"

# Also write every scored record here (the service may write only under /var/lib/edgeml).
# output = "/var/lib/edgeml/scored.jsonl"
# Publish each prediction to edgeml/<fleet>/<device>/predictions (QoS 0).
# publish_predictions = false
# Run the artifact of this precision (fp32, fp16, int8); default: the best the device runs.
# precision = "fp32"
# debug, info, warning or error (the journal: journalctl -u edgeml-runtime).
log_level = "info"

# A drift window closes after this many rows, or after window_seconds, whichever comes first.
# window_rows = 1000
# window_seconds = 300.0
# The outbox keeps drift windows until the broker acknowledges them (default:
# /var/lib/edgeml/<fleet>/<device>.outbox.db) and its bound in bytes.
# outbox_max_bytes = 16777216

# The settings of `edgeml-runtime serve` (the edgeml-runtime-serve service: predictions over HTTP); see
# `edgeml-runtime serve --help` and docs/serve.md. After a change: sudo systemctl restart edgeml-runtime-serve
[serve]
# 127.0.0.1 answers this machine only; 0.0.0.0 every network.
host = "0.0.0.0"
port = 8080
# Every request but the health checks carries Authorization: Bearer <the token in /etc/edgeml/token>, which
# the service reads as a systemd credential.
# HTTPS: a certificate and its key (PEM), readable by the service (e.g. mode 644 and a key under LoadCredential).
# tls_cert_file = "/etc/edgeml/cert.pem"
# tls_key_file = "/etc/edgeml/key.pem"
# Drift windows, as for run: to a broker (with device_id, fleet) and/or a file.
# broker = "mqtt://CHANGE-ME:1883"
# device_id = "CHANGE-ME"
# fleet = "CHANGE-ME"
# drift_output = "/var/lib/edgeml/windows.jsonl"
# window_rows = 1000
# Limits: request body bytes, inference requests at once (503 beyond), seconds to arrive and to be scored.
# max_body_bytes = 8388608
# max_in_flight = 64
# request_timeout = 30.0
log_level = "info"

{UPDATE_TABLE}"""


def install_script(requirement: str) -> str:
    """``install.sh``: a venv, an offline ``pip install``, the bundle, the config template, the unit."""
    return f"""\
#!/bin/sh
# Install the edgeml runtime from this package, offline. Run as root: sudo ./install.sh
#   --prefix DIR    where the venv and bundle go (default {PREFIX}; also $PREFIX)
#   --confdir DIR   where runtime.toml goes (default {CONFDIR}; also $CONFDIR)
#   --unitdir DIR   where the systemd unit goes (default /etc/systemd/system; also $UNITDIR)
#   --no-systemd    do not run systemctl (a container, a test, a board without systemd)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${{PREFIX:-{PREFIX}}}
CONFDIR=${{CONFDIR:-{CONFDIR}}}
UNITDIR=${{UNITDIR:-/etc/systemd/system}}
PYTHON=${{PYTHON:-python3}}
SYSTEMD=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --confdir) CONFDIR=$2; shift 2 ;;
    --unitdir) UNITDIR=$2; shift 2 ;;
    --no-systemd) SYSTEMD=no; shift ;;
    *) echo "install.sh: unknown option $1 (see the top of this script)" >&2; exit 2 ;;
  esac
done

echo "creating the virtual environment $PREFIX/venv"
mkdir -p "$PREFIX"
"$PYTHON" -m venv "$PREFIX/venv" || {{
  echo "install.sh: $PYTHON -m venv failed; on Debian / Raspberry Pi OS: sudo apt install python3-venv" >&2; exit 1; }}
echo "installing {requirement} from $HERE/wheels (no network)"
# Only this package's wheels: no index, no pip configuration of this machine.
PIP_CONFIG_FILE=/dev/null "$PREFIX/venv/bin/python" -m pip install --isolated --quiet --no-index \\
  --find-links "$HERE/wheels" --upgrade "{requirement}"

echo "copying the bundle to $PREFIX/bundle"
rm -rf "$PREFIX/bundle.new"
cp -R "$HERE/bundle" "$PREFIX/bundle.new"
rm -rf "$PREFIX/bundle.old"
if [ -d "$PREFIX/bundle" ]; then mv "$PREFIX/bundle" "$PREFIX/bundle.old"; fi
mv "$PREFIX/bundle.new" "$PREFIX/bundle"
rm -rf "$PREFIX/bundle.old"

mkdir -p "$CONFDIR"
if [ -e "$CONFDIR/runtime.toml" ]; then
  echo "keeping $CONFDIR/runtime.toml (the new template is $CONFDIR/runtime.toml.new)"
  cp "$HERE/runtime.toml" "$CONFDIR/runtime.toml.new"
else
  cp "$HERE/runtime.toml" "$CONFDIR/runtime.toml"
fi

if [ ! -e "$CONFDIR/token" ]; then
  echo "making the bearer token of edgeml-runtime-serve: $CONFDIR/token (mode 600)"
  (umask 077; "$PREFIX/venv/bin/python" -c "import secrets; print(secrets.token_hex(32))" > "$CONFDIR/token")
fi

mkdir -p "$UNITDIR"
for unit in {UNIT_NAME} {SERVE_UNIT_NAME}; do
  sed -e "s#{PREFIX}#$PREFIX#g" -e "s#{CONFDIR}#$CONFDIR#g" "$HERE/$unit" > "$UNITDIR/$unit"
done
if [ "$SYSTEMD" = yes ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

cat <<NEXT
installed. Next:
  1. fill in device_id, fleet, broker and the input in $CONFDIR/runtime.toml
  2. the MQTT password: sudo install -m 600 /dev/null $CONFDIR/mqtt_password && sudoedit $CONFDIR/mqtt_password
  3. sudo systemctl enable --now edgeml-runtime && journalctl -u edgeml-runtime -f
  or, for predictions over HTTP ([serve] in runtime.toml; the token is in $CONFDIR/token):
     sudo systemctl enable --now edgeml-runtime-serve && journalctl -u edgeml-runtime-serve -f
NEXT
"""


def uninstall_script() -> str:
    """``uninstall.sh``: removes what install.sh put there; config and state stay unless ``--purge``."""
    return f"""\
#!/bin/sh
# Remove the edgeml runtime: sudo ./uninstall.sh [--purge] [--prefix DIR] [--confdir DIR] [--unitdir DIR]
#   [--statedir DIR] [--no-systemd]. Keeps {CONFDIR} and /var/lib/edgeml (the outbox) unless --purge.
set -eu
PREFIX=${{PREFIX:-{PREFIX}}}
CONFDIR=${{CONFDIR:-{CONFDIR}}}
UNITDIR=${{UNITDIR:-/etc/systemd/system}}
STATEDIR=${{STATEDIR:-/var/lib/edgeml}}
SYSTEMD=yes
PURGE=no
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --confdir) CONFDIR=$2; shift 2 ;;
    --unitdir) UNITDIR=$2; shift 2 ;;
    --statedir) STATEDIR=$2; shift 2 ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --purge) PURGE=yes; shift ;;
    *) echo "uninstall.sh: unknown option $1 (see the top of this script)" >&2; exit 2 ;;
  esac
done
ON_SYSTEMD=no
if [ "$SYSTEMD" = yes ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  ON_SYSTEMD=yes
  systemctl disable --now {UNIT_NAME} {SERVE_UNIT_NAME} 2>/dev/null || true
fi
rm -f "$UNITDIR/{UNIT_NAME}" "$UNITDIR/{SERVE_UNIT_NAME}"
[ "$ON_SYSTEMD" = yes ] && systemctl daemon-reload
rm -rf "$PREFIX/venv" "$PREFIX/bundle"
rmdir "$PREFIX" 2>/dev/null || true
if [ "$PURGE" = yes ]; then
  rm -rf "$CONFDIR" "$STATEDIR"
  # DynamicUser=yes keeps the state in /var/lib/private/edgeml (/var/lib/edgeml links to it).
  if [ "$STATEDIR" = /var/lib/edgeml ]; then rm -rf /var/lib/private/edgeml; fi
  echo "removed the runtime, its config $CONFDIR and its state $STATEDIR"
else
  echo "removed the runtime; kept $CONFDIR and $STATEDIR (uninstall.sh --purge removes them)"
fi
"""


def readme_text(bundle: str, target: str) -> str:
    """README.txt: what the package is and the three commands."""
    return f"""\
edgeml device package: bundle {bundle} for target {target}.

On the device (no network needed), from this folder:

  sudo ./install.sh                                   # venv in {PREFIX}, config in {CONFDIR}
  sudoedit {CONFDIR}/runtime.toml                       # device_id, fleet, broker, input
  sudo systemctl enable --now edgeml-runtime          # then: journalctl -u edgeml-runtime -f
  sudo systemctl enable --now edgeml-runtime-serve    # or: predictions over HTTP ([serve], docs/serve.md)

The MQTT password goes in {CONFDIR}/mqtt_password (mode 600). ./uninstall.sh removes the runtime
(--purge also its config and state). Step by step: docs/device.md in the edgeml repository.
"""
