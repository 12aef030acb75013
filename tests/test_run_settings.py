"""Settings of `edgeml-runtime run` and its input sources."""

from __future__ import annotations

import queue
import threading

import pytest

from edgeml_runtime.settings import SettingsError, resolve_settings
from edgeml_runtime.stream import END, FileSource

BASE_ENV = {"EDGEML_DEVICE_ID": "env-dev", "EDGEML_FLEET": "env-fleet", "EDGEML_BROKER": "mqtt://env:1883"}


def test_flags_beat_file_beat_environment_beat_defaults(tmp_path):
    conf = tmp_path / "runtime.toml"
    conf.write_text('[run]\nfleet = "file-fleet"\nwindow_rows = 200\nwindow_seconds = 30\n')
    env = dict(BASE_ENV, EDGEML_WINDOW_ROWS="100", EDGEML_PUBLISH_PREDICTIONS="yes")
    s = resolve_settings({"window_rows": 50, "fleet": None}, config=conf, environ=env)
    assert s["window_rows"] == 50  # flag
    assert s["fleet"] == "file-fleet" and s["window_seconds"] == 30.0  # file
    assert s["device_id"] == "env-dev" and s["publish_predictions"] is True  # environment
    assert s["psi_significant"] == 0.25 and s["mqtt_protocol"] == "5"  # defaults


def test_config_file_from_environment_variable(tmp_path):
    conf = tmp_path / "r.toml"
    conf.write_text('[run]\ndevice_id = "pi-9"\n')
    s = resolve_settings({}, environ=dict(BASE_ENV, EDGEML_RUNTIME_CONFIG=str(conf)))
    assert s["device_id"] == "pi-9"


@pytest.mark.parametrize("text,message", [
    ('[run]\nwindow_row = 5\n', "unknown setting 'window_row'; did you mean 'window_rows'"),
    ('[run]\nwindow_rows = "many"\n', "[run] window_rows = 'many' has the wrong type; expected int"),
    ('[drift]\nx = 1\n', "settings go in a [run] table"),
    ('[run\n', "is not valid TOML"),
])
def test_bad_config_file_names_file_and_key(tmp_path, text, message):
    conf = tmp_path / "r.toml"
    conf.write_text(text)
    with pytest.raises(SettingsError) as err:
        resolve_settings({}, config=conf, environ=BASE_ENV)
    assert message in str(err.value) and str(conf) in str(err.value)


@pytest.mark.parametrize("env,flags,message", [
    ({}, {}, "no device id given: pass --device-id, set EDGEML_DEVICE_ID"),
    (dict(BASE_ENV, EDGEML_WINDOW_ROWS="ten"), {}, "EDGEML_WINDOW_ROWS='ten' is not a valid int"),
    (BASE_ENV, {"device_id": "a/b"}, "cannot contain '/'"),
    (BASE_ENV, {"broker": "tcp://x:1883"}, "must look like mqtt://host:1883"),
    (BASE_ENV, {"mqtt_protocol": "4"}, "must be 5 or 3.1.1"),
    (BASE_ENV, {"psi_moderate": 0.5}, "psi_moderate <= psi_significant"),
])
def test_bad_settings_say_how_to_fix(env, flags, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_settings(flags, environ=env)


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
