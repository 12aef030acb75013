"""Credentials: the fleet's broker ACL and password file (edgeml fleet credentials), and how a device holds its secret.

The broker itself checks what is generated in tests/test_mqtt_security.py;
here: the `$7$` hash against what `mosquitto_passwd` writes, the device list's
errors, file modes, kept passwords, links, the CLI's wiring, and the
runtime's refusal of exposed password files and configs.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet.credentials import mosquitto_hash, read_devices, write_credentials
from edgeml_runtime.errors import SettingsError
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.settings import resolve_settings

DEVICES = """
[fleets.plant-a]
devices = ["pi-07", "pi-08"]
[fleets.plant-b.devices.pi-07]
user = "plant-b.pi-07"
[consumers.dashboard]
"""
ENV = {"EDGEML_FLEET": "plant-a", "EDGEML_DEVICE_ID": "pi-07", "EDGEML_MQTT_USERNAME": "pi-07"}


def devices_file(tmp_path, text: str = DEVICES, mode: int = 0o600):
    path = tmp_path / "devices.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_hash_is_what_mosquitto_passwd_writes(tmp_path):
    tool = shutil.which("mosquitto_passwd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    subprocess.run([tool, "-b", "-c", str(tmp_path / "pw"), "pi-07", "s3cret-ünï"], check=True, capture_output=True)
    user, entry = (tmp_path / "pw").read_text().strip().split(":", 1)
    _, seven, rounds, salt, _ = entry.split("$")
    assert (user, seven) == ("pi-07", "7")
    assert mosquitto_hash("s3cret-ünï", salt=base64.b64decode(salt), iterations=int(rounds)) == entry


def test_each_device_is_bound_to_its_fleet_and_id(tmp_path):
    written = write_credentials(devices_file(tmp_path), tmp_path / "out")
    acl = (tmp_path / "out" / "acl").read_text()
    blocks = [b.strip().splitlines()[1:] for b in acl.split("\n\n")[1:] if b.strip()]
    releases = "topic read edgeml/{}/_controller/release"
    assert blocks == [["user pi-07", "topic write edgeml/plant-a/pi-07/#", releases.format("plant-a"),
                       releases.format("plant-a") + "/pi-07"],
                      ["user pi-08", "topic write edgeml/plant-a/pi-08/#", releases.format("plant-a"),
                       releases.format("plant-a") + "/pi-08"],
                      ["user plant-b.pi-07", "topic write edgeml/plant-b/pi-07/#", releases.format("plant-b"),
                       releases.format("plant-b") + "/pi-07"],
                      ["user dashboard", "topic read edgeml/#"]]
    assert "pattern" not in acl and "%u" not in acl
    users = [line.split(":", 1)[0] for line in (tmp_path / "out" / "passwd").read_text().splitlines()]
    assert users == ["pi-07", "pi-08", "plant-b.pi-07", "dashboard"]
    assert written.origins == ("generated",) * 4


def test_secrets_are_private_and_generated_passwords_are_kept(tmp_path):
    out = tmp_path / "out"
    write_credentials(devices_file(tmp_path), out)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert modes["passwd"] == 0o600 and modes["acl"] == 0o644
    assert modes["passwords"] == modes["passwords/plant-a"] == 0o700
    assert modes["passwords/plant-a/pi-07"] == modes["passwords/_consumers/dashboard"] == 0o600
    first = (out / "passwords" / "plant-a" / "pi-07").read_text()
    assert len(first.strip()) >= 32
    again = write_credentials(devices_file(tmp_path, DEVICES + '[fleets.plant-c]\ndevices = ["pi-01"]\n'), out)
    assert (out / "passwords" / "plant-a" / "pi-07").read_text() == first
    assert again.origins.count("kept") == 4 and again.origins.count("generated") == 1


def test_a_planted_link_is_replaced_not_followed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out / "passwd").symlink_to(victim)
    (out / "acl").symlink_to(victim)
    write_credentials(devices_file(tmp_path), out)
    assert victim.read_text() == "keep me"
    assert not (out / "passwd").is_symlink() and (out / "passwd").read_text().startswith("pi-07:$7$")


@pytest.mark.parametrize("text,message", [
    ('[fleets."plant\\u0000a"]\ndevices = ["pi-07"]', r"fleets\.plant.a: fleet name 'plant\\x00a' contains the "
                                                       "control character U\\+0000"),
    ('[fleets.plant-a]\ndevices = ["pi 07"]', r"device id 'pi 07' contains ' '"),
    ('[fleets.plant-a]\ndevices = ["controller"]', "device id 'controller' is reserved for the fleet's own topics"),
    ('[fleets.plant-a]\ndevices = ["' + "p" * 65 + '"]', "is 65 characters long, over the limit of 64"),
    ('[fleets.plant-a]\ndevices = ["pi-07"]\n[fleets.plant-b]\ndevices = ["pi-07"]',
     r"fleets\.plant-b\.devices\.pi-07: user 'pi-07' is already the user of .*fleets\.plant-a\.devices\.pi-07; .*"
     r"set user = \"<fleet>\.<device>\""),
    ('[fleets.plant-a]\ndevices = ["pi-07"]\n[consumers.pi-07]', "user 'pi-07' is already the user of"),
    ('[fleets.plant-a]\ndevice = ["pi-07"]', r"fleets\.plant-a\.device is not a key .*; use devices"),
    ('[fleets.plant-a]\ndevices = []', r"fleets\.plant-a\.devices must list the fleet's device ids"),
    ("[consumers.dashboard]", r"no \[fleets\.<name>\] table"),
    ('[fleets.plant-a.devices.pi-07]\nread = ["edgeml/plant-b/#"]', "would let a device read the fleet's own topics"),
    ('[fleets.plant-a.devices.pi-07]\nread = ["sensors/#/x"]', "is not an MQTT topic filter"),
    ('[fleets.plant-a.devices.pi-07]\npassword = "short"', "password must be at least 12 characters"),
    ('[fleets.plant-a]\ndevices = ["pi-07"]\n[consumers.d]\nfleets = ["plant-z"]',
     "consumers.d.fleets names 'plant-z', which is not a fleet of this list"),
    ("[fleets", "not valid TOML"),
])
def test_device_list_mistakes_name_the_entry_and_the_fix(tmp_path, text, message):
    with pytest.raises(FleetError, match=message):
        read_devices(devices_file(tmp_path, text))


def test_a_device_list_holding_passwords_must_be_private(tmp_path):
    text = '[fleets.plant-a.devices.pi-07]\npassword = "a long given password"\n'
    with pytest.raises(FleetError, match=r"holds passwords and can be read by every user .*\(mode 0644\); run "
                                         "chmod o-rwx"):
        read_devices(devices_file(tmp_path, text, 0o644))
    written = write_credentials(devices_file(tmp_path, text, 0o640), tmp_path / "out")
    assert written.origins == ("given",)
    assert (tmp_path / "out" / "passwords" / "plant-a" / "pi-07").read_text() == "a long given password\n"


def test_the_cli_writes_the_files_and_reports_errors_cleanly(tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["fleet", "credentials", "--devices", str(devices_file(tmp_path)), "--out",
                                str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert "3 device(s) in 2 fleet(s), 1 consumer(s)" in done.output and "4 generated" in done.output
    bad = runner.invoke(main, ["fleet", "credentials", "--devices", str(devices_file(tmp_path, "[fleets.\"$x\"]\n")),
                               "--out", str(tmp_path / "out2")])
    assert bad.exit_code == 2 and "error: " in bad.output and "reserved" in bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)  # _fail exits: no traceback


# -- the device's side: where its password lives -------------------------------------------------------------

def test_a_world_readable_config_holding_the_password_is_refused(tmp_path):
    config = tmp_path / "runtime.toml"
    config.write_text('[run]\nbroker = "mqtts://broker.plant.local:8883"\nmqtt_password = "s3cret"\n')
    config.chmod(0o644)
    with pytest.raises(SettingsError, match=r"runtime\.toml: holds \[run\] mqtt_password and can be read by every "
                                            r"user on this machine \(mode 0644\)"):
        resolve_settings({}, config=config, environ=ENV)
    config.chmod(0o640)  # the service's group may read it
    assert resolve_settings({}, config=config, environ=ENV).mqtt.password == "s3cret"
    config.write_text('[run]\nbroker = "mqtts://broker.plant.local:8883"\n')
    config.chmod(0o644)  # no secret in it: readable by all is fine
    assert resolve_settings({}, config=config, environ=ENV).mqtt.password is None


def test_a_password_file_is_read_once_and_must_be_private(tmp_path):
    secret = tmp_path / "mqtt_password"
    secret.write_text("from-the-file\n")
    secret.chmod(0o600)
    flags = {"broker": "mqtts://broker.plant.local:8883", "mqtt_password_file": str(secret)}
    s = resolve_settings(flags, environ=ENV)
    assert s.mqtt.password == "from-the-file" and "from-the-file" not in repr(s)
    secret.chmod(0o604)
    with pytest.raises(SettingsError, match=r"^mqtt_password_file = '.*mqtt_password' \(from flag "
                                            r"--mqtt-password-file\): can be read by every user"):
        resolve_settings(flags, environ=ENV)
    secret.chmod(0o600)
    with pytest.raises(SettingsError, match=r"a password and a password file were both given, with mqtt_password "
                                            r"= '\*\*\*' \(from environment variable EDGEML_MQTT_PASSWORD\)"):
        resolve_settings(flags, environ={**ENV, "EDGEML_MQTT_PASSWORD": "another"})
    with pytest.raises(SettingsError, match="mqtt_password_file = .*: cannot be read \\(No such file"):
        resolve_settings({**flags, "mqtt_password_file": str(tmp_path / "absent")}, environ=ENV)
    secret.write_text("")
    with pytest.raises(SettingsError, match="is empty; put the password alone on the first line"):
        resolve_settings(flags, environ=ENV)


def test_a_systemd_credential_is_the_password_when_none_is_given(tmp_path):
    (tmp_path / "mqtt_password").write_text("from-systemd")
    (tmp_path / "mqtt_password").chmod(0o400)  # as systemd makes it
    env = {**ENV, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    flags = {"broker": "mqtts://broker.plant.local:8883"}
    assert resolve_settings(flags, environ=env).mqtt.password == "from-systemd"
    assert resolve_settings(flags, environ={**env, "EDGEML_MQTT_PASSWORD": "env"}).mqtt.password == "env"


def test_a_password_over_plain_mqtt_to_another_host_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="edgeml_runtime"):
        MqttSettings("mqtt://broker.plant.local:1883", username="pi-07", password="p")
        MqttSettings("mqtt://10.0.0.5", username="pi-07", password="p")
        for quiet in ("mqtt://127.0.0.1:1883", "mqtt://localhost", "mqtt://[::1]:1883", "mqtts://broker.plant.local"):
            MqttSettings(quiet, username="pi-07", password="p")
        MqttSettings("mqtt://broker.plant.local:1883")  # no password: nothing to read
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all("over plain mqtt://" in w and "use mqtts://" in w for w in warned)
    assert "broker.plant.local" in warned[0] and "10.0.0.5" in warned[1]


def test_the_password_flag_warns_that_it_shows_in_ps(tmp_path):
    from conftest import BIN

    done = subprocess.run([str(BIN / "edgeml-runtime"), "run", str(tmp_path / "no-bundle"), "--device-id", "pi-07",
                           "--fleet", "plant-a", "--broker", "mqtt://127.0.0.1:1", "--mqtt-username", "pi-07",
                           "--mqtt-password", "visible"], capture_output=True, text=True, timeout=60)
    assert "warning: --mqtt-password shows in ps" in done.stderr and "--mqtt-password-file" in done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_the_shipped_acl_is_what_the_command_writes_for_the_shipped_device_list(tmp_path):
    from conftest import REPO

    docs = REPO / "docs" / "mosquitto"
    write_credentials(docs / "devices.toml", tmp_path)
    assert (tmp_path / "acl").read_text() == (docs / "acl").read_text(), \
        "regenerate docs/mosquitto/acl: edgeml fleet credentials --devices docs/mosquitto/devices.toml --out DIR"
