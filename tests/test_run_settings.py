"""Settings of `edgeml-runtime run` and its input sources."""

from __future__ import annotations

import queue
import threading

import pytest

from edgeml_runtime.errors import SettingsError
from edgeml_runtime.settings import RUN, Key, Section, Table, register_table, resolve_settings
from edgeml_runtime.stream import END, FileSource

BASE_ENV = {"EDGEML_DEVICE_ID": "env-dev", "EDGEML_FLEET": "env-fleet", "EDGEML_BROKER": "mqtt://env:1883"}


def test_flags_beat_file_beat_environment_beat_defaults(tmp_path):
    conf = tmp_path / "runtime.toml"
    conf.write_text('[run]\nfleet = "file-fleet"\nwindow_rows = 200\nwindow_seconds = 30\nmqtt_protocol = "3.1.1"\n')
    env = dict(BASE_ENV, EDGEML_WINDOW_ROWS="100", EDGEML_PUBLISH_PREDICTIONS="yes", EDGEML_MQTT_PROTOCOL="5",
               EDGEML_OUTBOX_MAX_BYTES="70000")
    s = resolve_settings({"window_rows": 50, "fleet": None}, config=conf, environ=env)
    assert s.drift.window_rows == 50  # flag over file over environment
    assert s.device.fleet == "file-fleet" and s.drift.window_seconds == 30.0  # file over environment
    assert s.mqtt.protocol == "3.1.1"  # file over environment
    assert s.device.device_id == "env-dev" and s.run.publish_predictions is True  # environment
    assert s.outbox.max_bytes == 70000 and s.mqtt.url == "mqtt://env:1883"  # environment, renamed fields
    assert s.drift.rule.psi_significant == 0.25 and s.run.format == "jsonl" and s.outbox.path is None  # defaults


def test_the_update_table_is_read_by_run_serve_and_update_and_a_commands_own_table_wins(tmp_path):
    conf = tmp_path / "runtime.toml"
    conf.write_text('[run]\ndevice_id = "pi-7"\nfleet = "plant-a"\nbroker = "mqtt://gw:1883"\n'
                    'update_max_rollbacks = 1\n\n'
                    '[serve]\ndevice_id = "pi-7"\nfleet = "plant-a"\n\n'
                    '[update]\nupdate_root_key = "/etc/edgeml/root.pub"\nupdate_server = "http://controller:8080"\n'
                    'update_dir = "/var/lib/edgeml/update"\nupdate_max_rollbacks = 5\n')
    run = resolve_settings({}, config=conf, environ={})
    assert (run.update.root_key, run.update.server, run.update.max_rollbacks) == ("/etc/edgeml/root.pub",
                                                                               "http://controller:8080", 1)
    served = resolve_settings({}, config=conf, environ={}, command="serve")
    assert (served.update.folder, served.update.max_rollbacks) == ("/var/lib/edgeml/update", 5)
    by_hand = resolve_settings({}, config=conf, environ={}, command="update")  # the device named in [run]
    assert (by_hand.device.device_id, by_hand.update.folder, by_hand.update.max_rollbacks) == \
        ("pi-7", "/var/lib/edgeml/update", 5)
    off = resolve_settings({}, config=None, environ=BASE_ENV)
    assert off.update is None  # no update_root_key: no updates


def test_config_file_from_environment_variable(tmp_path):
    conf = tmp_path / "r.toml"
    conf.write_text('[run]\ndevice_id = "pi-9"\n')
    s = resolve_settings({}, environ=dict(BASE_ENV, EDGEML_RUNTIME_CONFIG=str(conf)))
    assert s.device.device_id == "pi-9"


@pytest.mark.parametrize("text,message", [
    ('[run]\nwindow_row = 5\n', "[run]: unknown setting 'window_row'; did you mean 'window_rows'"),
    ('[run]\nwindow_rows = "many"\n', "window_rows = 'many' (from file {conf}, [run] window_rows): has the wrong "
                                       "type; expected a whole number"),
    ('[drift]\nx = 1\n', "unknown table or key 'drift'; settings go in a table per command: [run]"),
    ('[runn]\nx = 1\n', "unknown table or key 'runn'; did you mean [run]?"),
    ('fleet = "x"\n', "unknown table or key 'fleet'"),
    ('run = 3\n', "run = 3 is not a table"),
    ('[run\n', "not valid TOML (Expected ']' at the end of a table declaration (at line 1, column 5)); fix the syntax"),
])
def test_bad_config_file_names_file_and_key(tmp_path, text, message):
    conf = tmp_path / "r.toml"
    conf.write_text(text)
    with pytest.raises(SettingsError) as err:
        resolve_settings({}, config=conf, environ=BASE_ENV)
    assert message.format(conf=conf) in str(err.value) and str(conf) in str(err.value)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r"gone.toml: no such runtime config file; check the path"):
        resolve_settings({}, config=tmp_path / "gone.toml", environ=BASE_ENV)


@pytest.mark.parametrize("env,flags,message", [
    ({}, {}, "no device id given: pass --device-id, set EDGEML_DEVICE_ID, or put device_id in the [run] table"),
    (dict(BASE_ENV, EDGEML_WINDOW_ROWS="ten"), {},
     "window_rows = 'ten' (from environment variable EDGEML_WINDOW_ROWS): is not a whole number"),
    (dict(BASE_ENV, EDGEML_FOLLOW="maybe"), {}, "follow = 'maybe' (from environment variable EDGEML_FOLLOW)"),
    (BASE_ENV, {"window_rows": 2.5}, "window_rows = 2.5 (from flag --window-rows): has the wrong type"),
    (BASE_ENV, {"device_id": "a/b"}, "device_id = 'a/b' (from flag --device-id): cannot contain '/'"),
    (BASE_ENV, {"broker": "tcp://x:1883"}, "broker = 'tcp://x:1883' (from flag --broker): must look like "
                                           "mqtt://host:1883"),
    (BASE_ENV, {"mqtt_protocol": "4"}, "mqtt_protocol = '4' (from flag --mqtt-protocol): this MQTT protocol is not "
                                       "supported; use 5 or 3.1.1"),
    (BASE_ENV, {"psi_moderate": 0.5}, "psi_moderate = 0.5 (from flag --psi-moderate): must satisfy 0 < psi_moderate "
                                      "<= psi_significant, with psi_significant = 0.25 (from the default)"),
    (dict(BASE_ENV, EDGEML_MQTT_PASSWORD="hunter2"), {},
     "mqtt_username = None (from the default): an MQTT password was given without a user name"),
])
def test_bad_settings_say_how_to_fix(env, flags, message):
    with pytest.raises(SettingsError) as err:
        resolve_settings(flags, environ=env)
    assert message in str(err.value) and "hunter2" not in str(err.value)


# Every bound of every owner, refused: (key, value, what the message says is allowed).
BOUNDS = [
    ("device_id", " ", "must be a non-empty text"),
    ("fleet", "plant+a", "cannot contain '/', '+' or '#'"),
    ("broker", "mqtt://[::1", "is not a valid URL"),
    ("broker", "mqtt://user:pw@gw", "holds a user name or password"),
    ("broker", "mqtt://gw:99999", "has an invalid port"),
    ("mqtt_ca_file", "ca.pem", "TLS files need a TLS broker URL"),
    ("mqtt_key_file", "k.pem", "a client key file was given without its certificate"),
    ("mqtt_protocol", "3", "this MQTT protocol is not supported"),
    ("format", "xml", "must be one of csv, jsonl"),
    ("precision", "fp8", "must be one of fp32, fp16, int8"),
    ("log_level", "loud", "must be one of debug, info, warning, error"),
    ("input_topic", " ", "is not an MQTT topic"),
    ("window_rows", 0, "must be a whole number of rows, at least 1"),
    ("window_seconds", 0.0, "must be a finite number of seconds above 0"),
    ("window_seconds", float("inf"), "must be a finite number of seconds above 0"),
    ("window_seconds", float("nan"), "must be a finite number of seconds above 0"),
    ("psi_moderate", 0.0, "must satisfy 0 < psi_moderate <= psi_significant"),
    ("psi_moderate", -0.1, "must satisfy 0 < psi_moderate <= psi_significant"),
    ("psi_moderate", 0.3, "must satisfy 0 < psi_moderate <= psi_significant"),
    ("psi_significant", 0.05, "must satisfy 0 < psi_moderate <= psi_significant"),
    ("psi_significant", float("nan"), "must be a finite number"),
    ("drifted_share", 0.0, "must be a share of the columns, above 0 and at most 1"),
    ("drifted_share", 1.5, "must be a share of the columns, above 0 and at most 1"),
    ("min_rows", -1, "must be a whole number of rows, at least 0"),
    ("outbox_max_bytes", 1000, "is too small for an outbox"),
]


# A bound between two keys is stated on the first; the other is named beside it, with its own source.
LEADS = {("mqtt_key_file", "k.pem"): "mqtt_cert_file", ("psi_significant", 0.05): "psi_moderate"}


def _toml(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value != value:
        return "nan"
    if value == float("inf"):
        return "inf"
    return repr(value)


def _env(value) -> str:
    return str(value)


@pytest.mark.parametrize("key,value,allowed", BOUNDS, ids=[f"{k}={v!r}" for k, v, _ in BOUNDS])
def test_every_bound_is_refused_the_same_from_flag_file_and_environment(tmp_path, key, value, allowed):
    conf = tmp_path / "r.toml"
    conf.write_text(f"[run]\n{key} = {_toml(value)}\n")
    base = dict(BASE_ENV, EDGEML_BROKER="mqtts://env:8883") if key == "mqtt_key_file" else BASE_ENV
    sources = {
        f"flag --{key.replace('_', '-')}": lambda: resolve_settings({key: value}, environ=base),
        f"file {conf}, [run] {key}": lambda: resolve_settings({}, config=conf, environ=base),
        f"environment variable EDGEML_{key.upper()}":
            lambda: resolve_settings({}, environ=dict(base, **{f"EDGEML_{key.upper()}": _env(value)})),
    }
    messages = []
    for source, resolve in sources.items():
        with pytest.raises(SettingsError) as err:
            resolve()
        text = str(err.value)
        named = LEADS.get((key, value), key)
        assert text.startswith(f"{named} = ") and allowed in text, text
        assert f"(from {source})" in text, text
        messages.append(text.replace(source, "SOURCE"))
    assert len(set(messages)) == 1, messages  # the same bound, judged by the same code, whatever the source


def test_a_related_setting_is_named_with_its_own_source(tmp_path):
    conf = tmp_path / "r.toml"
    conf.write_text("[run]\npsi_significant = 0.2\n")
    with pytest.raises(SettingsError) as err:
        resolve_settings({}, config=conf, environ=dict(BASE_ENV, EDGEML_PSI_MODERATE="0.21"))
    assert str(err.value).startswith("psi_moderate = 0.21 (from environment variable EDGEML_PSI_MODERATE): must "
                                     "satisfy 0 < psi_moderate <= psi_significant, with psi_significant = 0.2 "
                                     f"(from file {conf}, [run] psi_significant)")


def test_a_password_is_never_shown(tmp_path):
    with pytest.raises(SettingsError) as err:
        resolve_settings({"mqtt_password": "hunter2", "broker": "mqtt://gw", "mqtt_ca_file": "ca.pem"},
                         environ=BASE_ENV)
    assert "hunter2" not in str(err.value)


def test_every_key_has_a_flag_an_env_variable_and_an_owner_field():
    import dataclasses

    for key, (section, k) in RUN.keys.items():
        owner, name = section.owner, k.field
        if "." in name:  # a field of a part the owner holds: DriftSettings.rule.min_rows
            part, name = name.split(".")
            owner = type({f.name: f for f in dataclasses.fields(owner)}[part].default)
        assert name in {f.name for f in dataclasses.fields(owner)}, key


def test_the_verdict_keys_fill_the_rule_the_drift_settings_hold(tmp_path):
    from edgeml_runtime.protocol import VerdictRule

    s = resolve_settings({"min_rows": 7, "psi_significant": 0.4}, environ=dict(BASE_ENV, EDGEML_DRIFTED_SHARE="0.5"))
    assert s.drift.rule == VerdictRule(psi_significant=0.4, drifted_share=0.5, min_rows=7)
    with pytest.raises(SettingsError, match=r"^min_rows = -1 \(from environment variable EDGEML_MIN_ROWS\): must "
                                            "be a whole number of rows, at least 0"):
        resolve_settings({}, environ=dict(BASE_ENV, EDGEML_MIN_ROWS="-1"))


@pytest.mark.parametrize("where", ["flag", "env", "file"])
def test_a_missing_tls_file_names_its_key_and_source(tmp_path, where):
    missing = str(tmp_path / "ca.pem")
    given = {"broker": "mqtts://gw:8883"}
    environ = dict(BASE_ENV)
    config = None
    if where == "flag":
        given["mqtt_ca_file"], source = missing, "flag --mqtt-ca-file"
    elif where == "env":
        environ["EDGEML_MQTT_CA_FILE"], source = missing, "environment variable EDGEML_MQTT_CA_FILE"
    else:
        config = tmp_path / "edgeml.toml"
        config.write_text(f'[run]\nmqtt_ca_file = "{missing}"\n')
        source = f"file {config}, [run] mqtt_ca_file"
    with pytest.raises(SettingsError) as err:
        resolve_settings(given, config, environ)
    assert str(err.value) == (f"mqtt_ca_file = {missing!r} (from {source}): does not exist; give the path of the PEM "
                              "certificate of the CA that signed the broker's certificate")


def test_tables_are_a_registry_that_refuses_overwrites():
    with pytest.raises(ValueError, match=r"\[run\] is already registered"):
        register_table(Table("run", dict, {}))
    with pytest.raises(ValueError, match=r"key\(s\) \['fleet'\] in more than one section"):
        register_table(Table("serve-test", dict, {"a": Section(RUN.sections["device"].owner,
                                                                  (Key("fleet", str, ""),)),
                                                  "b": Section(RUN.sections["device"].owner,
                                                               (Key("fleet", str, ""),))}))


def _drain(q, timeout=5.0):
    items = []
    while True:
        item = q.get(timeout=timeout)
        if item is END:
            return items
        items.append(item)


def test_file_source_reads_jsonl_and_reports_bad_lines(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"a": 1}\n\nnot json\n[1, 2]\n{"a": 2}')
    q = queue.Queue()
    FileSource(str(f), "jsonl", q, follow=False, stop=threading.Event()).start()
    items = _drain(q)
    assert [i.row for i in items] == [1, 2, 3, 4]
    assert items[0].record == {"a": 1} and items[3].record == {"a": 2}
    assert "not valid JSON" in items[1].error.reason and "not an object" in items[2].error.reason


def test_file_source_follows_a_growing_csv_and_survives_rotation(tmp_path):
    f = tmp_path / "in.csv"
    f.write_text("a,b\n1,2\n")
    q, stop = queue.Queue(), threading.Event()
    src = FileSource(str(f), "csv", q, follow=True, stop=stop)
    src.start()
    assert q.get(timeout=5).record == {"a": "1", "b": "2"}
    with f.open("a") as out:
        out.write("3,")  # half a line: not emitted until it is complete
        out.flush()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)
        out.write("4\n5\n")
    assert q.get(timeout=5).record == {"a": "3", "b": "4"}
    assert q.get(timeout=5).error is not None  # "5" has one field
    rotated = tmp_path / "new.csv"
    rotated.write_text("a,b\n7,8\n")
    rotated.replace(f)
    assert q.get(timeout=5).record == {"a": "7", "b": "8"}
    stop.set()
    src.join(timeout=5)
    assert not src.is_alive()
