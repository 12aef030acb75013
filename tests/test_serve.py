"""``edgeml-runtime serve``: every route and its errors, an independent OIP v2 client, /metrics, drift windows.

One server on the demo bundle serves the module. Its answers are compared
with ``Model.predict`` in this process and with ``edgeml-runtime score`` on
the same rows; the Open Inference Protocol is spoken by Triton's own client
(``tritonclient``, unmodified) beside raw HTTP; ``/metrics`` is read with
``prometheus_client``'s parser; the drift windows of a served stream must be
those ``run`` closes on the same records.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import BIN
from serve_client import call, connection, rows, served

from edgeml_runtime.agent import Agent
from edgeml_runtime.model import Model
from edgeml_runtime.settings import resolve_settings


@pytest.fixture(scope="module")
def server(demo_bundle):
    with served(demo_bundle) as s:
        yield s


@pytest.fixture(scope="module")
def model(demo_bundle):
    return Model.load(demo_bundle)


@pytest.fixture(scope="module")
def records(demo_rows):
    return rows(demo_rows)


def _tensors(model, records, binary=None):
    """The OIP inputs of ``records``: one tensor per raw column, as the model metadata states its datatype."""
    out = []
    for c in model.manifest.schema.columns:
        values = [r.get(c.name) for r in records]
        if c.kind == "numeric":
            values = [None if v in (None, "") else float(v) for v in values]
            out.append({"name": c.name, "datatype": "FP64", "shape": [len(records)], "data": values})
        else:
            out.append({"name": c.name, "datatype": "BYTES", "shape": [len(records), 1], "data": [[v] for v in values]})
    return out


# -- health, metadata --------------------------------------------------------------------------------------
def test_health_and_metadata_as_the_protocol_has_them(server, model):
    m = model.manifest
    assert call(server.url, "GET", "/v2/health/live")[::2] == (200, {"live": True})
    assert call(server.url, "GET", "/v2/health/ready")[::2] == (200, {"ready": True})
    status, _, meta = call(server.url, "GET", "/v2")
    assert status == 200 and meta["name"] == "edgeml-runtime" and meta["extensions"] == []
    for path in (f"/v2/models/{m.name}", f"/v2/models/{m.name}/versions/{m.version}"):
        status, _, meta = call(server.url, "GET", path)
        assert status == 200 and meta["name"] == m.name and meta["versions"] == [str(m.version)]
        assert [i["name"] for i in meta["inputs"]] == [c.name for c in m.schema.columns]
        kinds = {c.name: c.kind for c in m.schema.columns}
        assert all(i["datatype"] == ("FP32" if kinds[i["name"]] == "numeric" else "BYTES") for i in meta["inputs"])
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
        assert meta["parameters"]["bundle_sha256"] == m.identity and meta["parameters"]["classes"] == [0, 1]
        assert call(server.url, "GET", path + "/ready")[::2] == (200, {"name": m.name, "ready": True})


@pytest.mark.parametrize("method, path, status, says", [
    ("GET", "/v2/models/nope", 404, "unknown model 'nope'; this server serves 'demo'"),
    ("GET", "/v2/models/demo/versions/9", 404, "model 'demo' has no version '9'; it serves version 1"),
    ("GET", "/v2/models/demo/versions/9/ready", 404, "no version '9'"),
    ("POST", "/v2/models/nope/infer", 404, "unknown model 'nope'"),
    ("GET", "/v2/models/demo/infer", 405, "GET is not allowed here; use POST"),
    ("POST", "/v2/health/live", 405, "use GET"),
    ("GET", "/v1/models/demo", 404, "no route '/v1/models/demo'; the routes are /v2/health/live"),
    ("GET", "/v2/models/demo/explain", 404, "no route"),
])
def test_unknown_models_versions_routes_and_methods(server, method, path, status, says):
    got, headers, body = call(server.url, method, path, body=b"{}" if method == "POST" else None)
    assert got == status and says in body["error"]
    if status == 405:
        assert headers["Allow"] in ("GET", "POST")


# -- inference ---------------------------------------------------------------------------------------------
def test_infer_answers_as_the_model_does_with_the_request_id(server, model, records):
    status, _, answer = call(server.url, "POST", "/v2/models/demo/infer",
                             {"id": "batch-7", "inputs": _tensors(model, records[:20])})
    want = model.predict(records[:20])
    assert status == 200 and answer["id"] == "batch-7"
    assert (answer["model_name"], answer["model_version"]) == ("demo", str(model.manifest.version))
    assert answer["parameters"] == {"bundle_sha256": model.manifest.identity, "artifact": model.artifact.path}
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["label"]["datatype"] == "INT64" and out["label"]["data"] == want.labels.tolist()
    assert out["probabilities"]["shape"] == [20, 2]
    np.testing.assert_allclose(np.array(out["probabilities"]["data"]).reshape(20, 2), want.probabilities, rtol=1e-6)
    one = call(server.url, "POST", "/v2/models/demo/versions/1/infer",
               {"inputs": _tensors(model, records[:1]), "outputs": [{"name": "label"}]})[2]
    assert "id" not in one and [o["name"] for o in one["outputs"]] == ["label"]
    assert one["outputs"][0]["data"] == want.labels[:1].tolist()


def test_a_missing_value_is_null(server, model, records):
    record = dict(records[0], vibration_mm_s=None)
    tensors = _tensors(model, [record])
    assert next(t for t in tensors if t["name"] == "vibration_mm_s")["data"] == [None]
    status, _, answer = call(server.url, "POST", "/v2/models/demo/infer", {"inputs": tensors})
    want = model.predict([record])
    assert status == 200
    np.testing.assert_allclose(answer["outputs"][1]["data"], want.probabilities[0], rtol=1e-6)


def _edit(tensors, name, **change):
    return [dict(t, **change) if t["name"] == name else t for t in tensors]


@pytest.mark.parametrize("make, says", [
    (lambda t: b"{not json", "the request body is not JSON"),
    (lambda t: [1, 2], "the request body is a JSON list, not an object"),
    (lambda t: {"inputs": []}, 'the request has no "inputs" list'),
    (lambda t: {"inputs": [x for x in t if x["name"] != "rpm"]}, "the request lacks input(s) 'rpm'"),
    (lambda t: {"inputs": [*t, {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]}]},
     "input 'colour' is not an input of the model; its inputs are 'timestamp', "),
    (lambda t: {"inputs": _edit(t, "timestamp", datatype="FP32", data=[3.0])},
     "input 'timestamp' is a datetime column and cannot come as FP32; send it as BYTES"),
    (lambda t: {"inputs": _edit(t, "rpm", datatype="FLOAT")}, "input 'rpm' has datatype 'FLOAT'; the protocol's"),
    (lambda t: {"inputs": _edit(t, "rpm", shape=[2])}, "input 'rpm' has 1 value(s) in \"data\" but shape [2] says 2"),
    (lambda t: {"inputs": _edit(t, "rpm", shape=[1, 3])}, "input 'rpm' has shape [1, 3]; give [rows] or [rows, 1]"),
    (lambda t: {"inputs": _edit(t, "rpm", datatype="BYTES", data=["fast"])}, "row 1, column 'rpm': "),
    (lambda t: {"inputs": t, "outputs": [{"name": "logits"}]}, "output 'logits' is not an output of the model"),
])
def test_infer_errors_are_400_and_name_the_input(server, model, records, make, says):
    body = make(_tensors(model, records[:1]))
    status, _, answer = call(server.url, "POST", "/v2/models/demo/infer", body,
                             headers=None if not isinstance(body, bytes) else {"Content-Type": "application/json"})
    assert status == 400 and says in answer["error"]


def test_predict_takes_a_record_a_list_and_csv(server, model, records, demo_rows):
    want = model.predict(records[:5])
    status, _, one = call(server.url, "POST", "/predict", records[0])
    assert status == 200 and one["model"]["bundle_sha256"] == model.manifest.identity
    assert one["predictions"] == [{"row": 1, "label": want.labels[0],
                                   "probabilities": dict(zip(["0", "1"], want.probabilities[0].tolist(), strict=True))}]
    many = call(server.url, "POST", "/predict", records[:5])[2]["predictions"]
    assert [p["row"] for p in many] == [1, 2, 3, 4, 5] and [p["label"] for p in many] == want.labels.tolist()
    text = demo_rows.read_text()
    status, _, by_csv = call(server.url, "POST", "/predict", text, {"Content-Type": "text/csv"})
    assert status == 200 and by_csv["predictions"][:5] == many and len(by_csv["predictions"]) == len(records)


def test_predict_errors_name_row_and_column(server, records):
    bad = [records[0], dict(records[1], rpm="fast"), 7, records[2]]
    status, _, answer = call(server.url, "POST", "/predict", bad)
    assert status == 422 and answer["row"] == 2 and answer["column"] == "rpm"
    assert answer["error"].startswith("row 2, column 'rpm': ") and "on_error=skip" in answer["error"]
    status, _, answer = call(server.url, "POST", "/predict?on_error=skip", bad)
    assert status == 200 and [p["row"] for p in answer["predictions"]] == [1, 4] and answer["bad_rows"] == 2
    assert [(e["row"], e["column"]) for e in answer["errors"]] == [(2, "rpm"), (3, None)]
    assert "not an object" in answer["errors"][1]["error"]
    text = "machine_id,rpm\nM-1,1500\n"
    status, _, answer = call(server.url, "POST", "/predict", text, {"Content-Type": "text/csv"})
    assert status == 422 and answer["row"] == 1 and answer["column"] is not None
    for body, says in ((b"{oops", "the body is not JSON"), (b"3", "the body is a JSON int"),
                       (b"[]", "the body holds no record")):
        status, _, answer = call(server.url, "POST", "/predict", body, {"Content-Type": "application/json"})
        assert status == 422 and says in answer["error"]
    for query, says in (("on_error=maybe", "on_error='maybe': give on_error=fail"),
                        ("colour=red", "unknown query parameter(s) 'colour'")):
        status, _, answer = call(server.url, "POST", f"/predict?{query}", records[0])
        assert status == 400 and says in answer["error"]


def test_concurrent_requests_answer_as_sequential_ones_and_as_score(server, demo_bundle, demo_rows, records,
                                                                    tmp_path):
    def one(record):
        return call(server.url, "POST", "/predict", record)[2]["predictions"][0]

    sequential = [one(r) for r in records]
    order = list(range(len(records))) * 4
    random.Random(3).shuffle(order)
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda i: (i, one(records[i])), order))
    assert all(answer == sequential[i] for i, answer in concurrent)
    done = subprocess.run([str(BIN / "edgeml-runtime"), "score", str(demo_bundle), "--input", str(demo_rows),
                           "--output", str(tmp_path / "scored.csv")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "scored.csv", newline="") as f:
        scored = list(csv.DictReader(f))
    assert [int(r["prediction"]) for r in scored] == [a["label"] for a in sequential]
    np.testing.assert_allclose([float(r["proba_1"]) for r in scored],
                               [a["probabilities"]["1"] for a in sequential], rtol=1e-5)


# -- an independent client -----------------------------------------------------------------------------------
def test_triton_s_own_client_speaks_to_it(server, model, records):
    tritonclient_http = pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")
    from tritonclient.utils import InferenceServerException

    client = tritonclient_http.InferenceServerClient(server.url.split("//")[1])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("demo")
    assert not client.is_model_ready("demo", "9")
    assert client.get_server_metadata()["name"] == "edgeml-runtime"
    meta = client.get_model_metadata("demo")
    want = model.predict(records[:8])
    for binary in (False, True):  # JSON tensors, and Triton's binary tensor extension
        inputs = []
        for t in meta["inputs"]:
            values = [records[i][t["name"]] for i in range(8)]
            array = np.array(values, dtype=object) if t["datatype"] == "BYTES" else np.array(values, np.float32)
            tensor = tritonclient_http.InferInput(t["name"], [8], t["datatype"])
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        result = client.infer("demo", inputs, request_id=f"r-{binary}")
        assert result.get_response()["id"] == f"r-{binary}"
        assert result.as_numpy("label").tolist() == want.labels.tolist()
        np.testing.assert_allclose(result.as_numpy("probabilities"), want.probabilities, rtol=1e-6)
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.infer("other", inputs)


# -- /metrics -------------------------------------------------------------------------------------------------
def test_metrics_parse_as_prometheus_text_and_count_what_was_served(demo_bundle, records):
    parser = pytest.importorskip("prometheus_client.parser", reason="pip install prometheus-client")
    with served(demo_bundle, window_rows=1000) as s:
        for r in records[:6]:
            assert call(s.url, "POST", "/predict", r)[0] == 200
        assert call(s.url, "POST", "/predict", [dict(records[0], rpm="fast")])[0] == 422
        assert call(s.url, "GET", "/v2/health/live")[0] == 200
        status, headers, text = call(s.url, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert all(name.startswith("edgeml_") for name in families)
    requests = {(x.labels["handler"], x.labels["code"]): x.value for x in families["edgeml_http_requests"].samples}
    assert families["edgeml_http_requests"].type == "counter"
    assert requests == {("/predict", "200"): 6, ("/predict", "422"): 1, ("/v2/health/live", "200"): 1}
    rows_total = {x.labels["result"]: x.value for x in families["edgeml_rows"].samples}
    assert rows_total == {"scored": 6, "bad": 1}
    hist = families["edgeml_inference_duration_seconds"]
    assert hist.type == "histogram"
    count = next(x.value for x in hist.samples if x.name.endswith("_count"))
    assert count == 6  # the refused request was not scored
    (info,) = families["edgeml_model_info"].samples
    m = Model.load(demo_bundle).manifest
    assert info.labels == {"name": "demo", "version": str(m.version), "bundle_sha256": m.identity,
                           "artifact": "model.onnx"} and info.value == 1
    psi = {x.labels["column"]: x.value for x in families["edgeml_drift_psi"].samples}
    assert set(psi) <= {c.name for c in m.schema.columns} and "rpm" in psi and all(v >= 0 for v in psi.values())
    assert families["edgeml_drift_window_rows"].samples[0].value == 6


# -- drift windows ---------------------------------------------------------------------------------------------
def test_the_drift_windows_of_a_served_stream_are_those_of_run(demo_bundle, demo_rows, records, tmp_path):
    window = {"window_rows": 20, "window_seconds": 3600.0, "min_rows": 10}
    with served(demo_bundle, drift_output=str(tmp_path / "served.jsonl"), **window) as s:
        with connection(s.url) as conn:  # one keep-alive connection, one record a request, in order
            for r in records[:30]:
                assert call(s.url, "POST", "/predict", r, conn=conn)[0] == 200
        assert call(s.url, "POST", "/predict", records[30:])[0] == 200  # the rest in one request
    run = resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "input": str(demo_rows), "format": "csv",
                            "drift_output": str(tmp_path / "run.jsonl"), **window}, environ={})
    Agent(demo_bundle, run).run()
    served_w, run_w = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
                       for name in ("served.jsonl", "run.jsonl"))
    assert [w["rows"] for w in served_w] == [w["rows"] for w in run_w] == [20, 20, len(records) - 40]

    def judged(w):
        return {"rows": w["rows"], "bad_rows": w["bad_rows"], "columns": w["columns"], "output": w["output"],
                "verdict": w["verdict"], "model": w["model"]}

    assert [judged(w) for w in served_w] == [judged(w) for w in run_w]


def test_windows_close_on_time_while_serving(demo_bundle, records, tmp_path):
    out = tmp_path / "windows.jsonl"
    with served(demo_bundle, drift_output=str(out), window_seconds=0.5, min_rows=1) as s:
        assert call(s.url, "POST", "/predict", records[:3])[0] == 200
        done = threading.Event()
        for _ in range(40):
            if out.exists() and out.read_text().strip():
                done.set()
                break
            done.wait(0.1)
        assert done.is_set(), "no window closed by time within 4 s"
    first = json.loads(out.read_text().splitlines()[0])
    assert first["rows"] == 3 and first["verdict"]["status"] is not None


def test_served_windows_reach_a_real_broker_with_the_model_that_scored_them(broker, demo_bundle, records, tmp_path):
    from broker import Subscriber
    from fleet_helpers import renumbered

    from edgeml_runtime.protocol import schema

    v2 = renumbered(demo_bundle, tmp_path, version="2")
    with Subscriber(broker.url) as sub:
        with served(demo_bundle, broker=broker.url, device_id="pi-07", fleet="plant-a", outbox=str(tmp_path / "o.db"),
                    window_rows=5, min_rows=1) as s:
            sub.wait_for(lambda x: x.on("birth"), what="the birth")
            assert call(s.url, "POST", "/predict", records[:7])[0] == 200  # one window of 5; 2 rows stay open
            s.swap(v2)  # closes the old model's 2 rows as a window of their own
            assert call(s.url, "POST", "/predict", records[:5])[0] == 200
        sub.wait_for(lambda x: x.on("death") and len(x.on("drift")) == 3, what="3 windows and a death")
    from jsonschema import Draft202012Validator, FormatChecker

    validator = Draft202012Validator(schema("drift"), format_checker=FormatChecker())
    windows = [w for _, w in sub.on("drift")]
    for w in windows:
        validator.validate(w)
    assert [(w["seq"], w["rows"], w["model"]["version"]) for w in windows] == [(0, 5, "1"), (1, 2, "1"), (2, 5, "2")]
    (_, birth), = sub.on("birth")
    assert birth["device"] == "pi-07" and birth["model"]["version"] == "1"
