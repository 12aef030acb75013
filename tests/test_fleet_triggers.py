"""The registry of retrain triggers: refusals by name, the command trigger's stdin, exit codes and last JSON line,
and the webhook trigger's Standard Webhooks signature checked independently by a real local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeml.errors import FleetError
from edgeml.fleet.settings import resolve
from edgeml.fleet.triggers import TRIGGERS, Job, Trigger, check_options, register_trigger

SECRET = base64.b64encode(b"a secret of thirty-two bytes!!!!").decode()


def job(tmp_path, **options) -> Job:
    retrain = {"id": 7, "fleet": "plant-a", "cohort": "", "trigger": "x", "reason": "drift", "attempt": 1,
               "decision_id": 3, "requested": 1.0}
    evidence = {"retrain": {**retrain, "request": 5}, "decisions": [{"id": 3, "kind": "drift"}], "champion": None}
    return Job(retrain=retrain, evidence=evidence, options=options, workdir=str(tmp_path))


def script(tmp_path, body: str) -> list[str]:
    path = tmp_path / "retrain.py"
    path.write_text("import json, sys\n" + body)
    return [sys.executable, str(path)]


# -- the registry --------------------------------------------------------------------------------------------------


def test_the_registry_refuses_to_overwrite_and_names_unknown_triggers():
    with pytest.raises(ValueError, match="trigger 'command' is already registered"):
        register_trigger(Trigger("command", lambda job, progress: {}))
    with pytest.raises(TypeError, match="run must be callable"):
        register_trigger(Trigger("mine", "not callable"))
    assert "mine" not in TRIGGERS
    with pytest.raises(FleetError, match=r"f.toml: \[trigger\] name = 'comand' is not a registered trigger; use one "
                                         r"of build, command, webhook"):
        check_options("comand", {}, "f.toml")


@pytest.mark.parametrize("name, options, match", [
    ("command", {}, r"\[trigger\] command is missing: the command trigger needs it; e.g. command = \["),
    ("command", {"command": []}, r"command = \[\]: must be a list of texts .*\(not empty"),
    ("command", {"command": ["x"], "shell": True}, r"\[trigger\] shell is not an option of the command trigger; its "
                                                    r"options are command"),
    ("webhook", {"url": "ftp://h", "secret_file": __file__}, r"url = 'ftp://h': must be a text \(an http:// or "
                                                             r"https:// URL\)"),
    ("webhook", {"url": "http://h", "secret_file": "/no/such"}, r"secret_file = '/no/such': .*existing file holding "
                                                                r"whsec_<base64>, never the secret itself"),
    ("webhook", {"url": "http://h", "secret": "whsec_x"}, r"secret is not an option of the webhook trigger"),
    ("build", {"data": "x.csv"}, r"data is not an option of the build trigger; its options are none"),
])
def test_options_are_checked_as_declared(name, options, match):
    with pytest.raises(FleetError, match=match):
        check_options(name, options, "fleet.toml")


def write(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("text, match", [
    ('[trigger]\nname = "command"\ncommand = ["x"]\non = ["drift", "anomaly"]\n',
     r"'anomaly' is not a decision kind that can fire a retrain; use drift or performance"),
    ('[trigger]\nname = "command"\ncommand = ["x"]\ntimeout = "soon"\n',
     r"retrain_timeout = 'soon' \(from .*fleet.toml \[trigger\] timeout\): not a duration"),
    ('[trigger]\nname = "command"\ncommand = ["x"]\nattempts = 0\n',
     r"retrain_attempts = 0 .*must be a whole number from 1 to 100"),
    ('[trigger]\ncommand = ["x"]\n', r"\[trigger\] command is not a key of \[trigger\] without a trigger name"),
    ('[trigger]\nname = "build"\n', r"\[retrain\] data is missing: the build trigger reads its rows afresh"),
    ('[trigger]\nname = "build"\n[retrain]\ndata = "rows.csv"\nlabel = "y"\nmax_trial = 3\n',
     r"unknown key 'max_trial' in \[retrain\]; did you mean 'max_trials'\?"),
    ('[trigger]\nname = "build"\n[retrain]\ndata = "rows.csv"\nmetric = "acuracy"\n',
     r"metric 'acuracy' is unknown; use one of .* \(set it with \[retrain\] in fleet.toml, not the --metric flag"),
    ('[trigger]\nname = "build"\n[retrain]\ndata = "rows.csv"\ntime_budget = "long"\n',
     r"\[retrain\] time_budget = 'long' has the wrong type; expected an integer or a number"),
    ('[promotion]\nmargin = 1\n[trigger]\nname = "command"\ncommand = ["x"]\n[retrains]\n',
     r"\[retrains\] is not a table of fleet.toml"),
])
def test_bad_retraining_tables_are_refused_at_start_by_name(tmp_path, text, match):
    with pytest.raises(FleetError, match=match):
        resolve({}, write(tmp_path / "fleet.toml", text), {})


def test_retraining_settings_from_fleet_toml_and_the_environment(tmp_path):
    config = write(tmp_path / "fleet.toml", '[trigger]\nname = "build"\nevery = "1d"\nretry_after = "30s"\n'
                   '[retrain]\ndata = "rows.csv"\nlabel = "failure"\nmax_trials = 3\n[promotion]\nmargin = 0.01\n')
    s = resolve({}, config, {"EDGEML_FLEET_RETRAIN_TIMEOUT": "2h"}).retraining
    assert (s.name, s.on, s.every, s.timeout, s.attempts, s.retry_after) == \
        ("build", ("drift", "performance"), 86400.0, 7200.0, 2, 30.0)
    assert s.build == {"data": str(tmp_path / "rows.csv"), "label": "failure", "max_trials": 3}
    assert s.promotion == {"margin": 0.01} and s.source == str(config)
    assert resolve({}, None, {}).retraining.name is None  # no [trigger]: retraining off


# -- command --------------------------------------------------------------------------------------------------------


def test_command_reads_the_evidence_on_stdin_and_reports_its_bundle(tmp_path):
    argv = script(tmp_path, "doc = json.load(sys.stdin)\nopen('seen.json', 'w').write(json.dumps(doc))\n"
                            "print('training...')\nprint(json.dumps({'bundle': 'dist/demo-2'}))\n")
    lines = []
    out = TRIGGERS["command"].run(job(tmp_path, command=argv), lines.append)
    assert out["status"] == "done" and out["error"] is None and out["exit_code"] == 0
    assert out["bundle"] == "dist/demo-2" and out["stdout"].startswith("training...\n")
    seen = json.loads((tmp_path / "seen.json").read_text())  # written in the workdir, from stdin
    assert seen["retrain"]["request"] == 5 and seen["decisions"] == [{"id": 3, "kind": "drift"}]
    assert lines == [f"running {' '.join(argv)}"]


def test_a_failing_command_is_failed_with_its_exit_code_and_stderr_tail(tmp_path):
    argv = script(tmp_path, "print('x' * 5000, file=sys.stderr)\nprint('no labelled rows', file=sys.stderr)\n"
                            "sys.exit(3)\n")
    out = TRIGGERS["command"].run(job(tmp_path, command=argv), lambda _: None)
    assert out["status"] == "failed" and out["exit_code"] == 3
    assert out["error"] == f"{argv[0]} exited with 3: no labelled rows"
    assert out["stderr"].endswith("no labelled rows\n") and len(out["stderr"]) == 2000
    missing = TRIGGERS["command"].run(job(tmp_path, command=[str(tmp_path / "nowhere")]), lambda _: None)
    assert missing["status"] == "failed" and "cannot run" in missing["error"] and "No such file" in missing["error"]


# -- webhook --------------------------------------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    """Verifies each POST as a Standard Webhooks receiver does, written from the spec, not from edgeml's code."""

    answer = (204, b"")
    got: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        mid, ts, signatures = (self.headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
        key = base64.b64decode(SECRET)
        expected = base64.b64encode(hmac.new(key, f"{mid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        valid = any(s.split(",", 1) == ["v1", expected] for s in signatures.split(" "))
        fresh = abs(time.time() - int(ts)) < 300
        self.got.append({"valid": valid, "fresh": fresh, "id": mid, "body": json.loads(body),
                         "type": self.headers["content-type"], "extra": self.headers.get("x-fleet")})
        status, text = self.answer
        self.send_response(status)
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.got, Receiver.answer = [], (204, b"")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/retrain"
    server.shutdown()
    server.server_close()


def test_the_webhook_is_signed_as_standard_webhooks_specify(tmp_path, receiver):
    secret = write(tmp_path / "webhook.secret", f"whsec_{SECRET}\n")
    options = check_options("webhook", {"url": receiver, "secret_file": str(secret), "headers": {"x-fleet": "a"}},
                            "fleet.toml")
    out = TRIGGERS["webhook"].run(job(tmp_path, **options), lambda _: None)
    assert out["status"] == "done" and out["http_status"] == 204 and out["error"] is None
    (got,) = Receiver.got
    assert got["valid"] and got["fresh"] and got["type"] == "application/json" and got["extra"] == "a"
    assert got["id"] == out["webhook_id"] == "msg_edgeml_plant-a_5"  # the request's id: the same for its retries
    assert got["body"]["retrain"]["id"] == 7 and got["body"]["decisions"][0]["kind"] == "drift"


def test_a_webhook_answering_an_error_is_failed_with_status_and_body(tmp_path, receiver):
    secret = write(tmp_path / "webhook.secret", f"whsec_{SECRET}")
    Receiver.answer = (503, b"the build farm is busy")
    out = TRIGGERS["webhook"].run(job(tmp_path, url=receiver, secret_file=str(secret)), lambda _: None)
    assert out["status"] == "failed" and out["http_status"] == 503 and out["body"] == "the build farm is busy"
    assert out["error"] == f"POST {receiver} answered 503: the build farm is busy"
    bad = write(tmp_path / "bad.secret", "not-a-secret")
    with pytest.raises(FleetError, match=r"does not hold a secret of the form whsec_<base64>"):
        TRIGGERS["webhook"].run(job(tmp_path, url=receiver, secret_file=str(bad)), lambda _: None)
