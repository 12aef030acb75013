"""``edgeml verify``: hashes, schema and parity on a bundle's sample rows; the sample rows themselves."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import build_bundle

from edgeml.cli import main
from edgeml.config import resolve
from edgeml.verify import pick_samples
from edgeml.verify.bundle_check import check_bundle
from edgeml.verify.samples import SAMPLE_ROWS
from edgeml_runtime.cells import to_boolean, to_category, to_datetime, to_number
from edgeml_runtime.protocol import bundle_sha256

pytest_plugins = ["twin_builds"]

pytestmark = pytest.mark.slow

TELCO_DROP = ("customerID",)


def _verify(*args):
    return CliRunner().invoke(main, ["verify", *map(str, args)])


def _copy(twins, target, tmp_path):
    return shutil.copytree(twins[target].bundles[0], tmp_path / "demo-1")


def _rehash_samples(bundle):
    """Record samples.json's new size and hash in the manifest, as a careful forger would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / "samples.json").read_bytes()
    manifest["samples"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
def test_verify_passes_on_a_fresh_build(twins, target):
    bundle = twins[target].bundles[0]
    result = _verify(bundle)
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    artifacts = [a["path"] for a in manifest["artifacts"]]
    for path in [*artifacts, "samples.json"]:
        assert f"ok    file    {path}" in result.output
    for path in artifacts:
        assert any(line.startswith("ok    parity") and f" {path} " in line for line in result.output.splitlines())
    assert manifest["samples"]["rows"] >= SAMPLE_ROWS and manifest["samples"]["source"] == "test"
    assert result.output.splitlines()[0] == f"identity  {bundle_sha256(manifest)}"
    assert "passed (" in result.output.splitlines()[-1]


def test_verify_reads_the_archive_and_prints_json(twins):
    result = _verify(twins["rpi4"].archives[0], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] is True and report["counts"]["fail"] == 0
    manifest = json.loads((twins["rpi4"].bundles[0] / "manifest.json").read_text())
    assert report["identity"] == bundle_sha256(manifest)
    kinds = {c["kind"] for c in report["checks"]}
    assert kinds == {"file", "schema", "parity"}


def test_a_flipped_artifact_byte_fails_its_hash(twins, tmp_path):
    bundle = _copy(twins, "rpi4", tmp_path)
    data = bytearray((bundle / "model.ort").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.ort").write_bytes(bytes(data))
    result = _verify(bundle)
    assert result.exit_code == 1, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL  file"))
    assert " model.ort " in line and "does not match the manifest" in line
    assert "ok    file    model.onnx" in result.output
    assert "FAILED" in result.output.splitlines()[-1]


def test_altered_expected_outputs_fail_parity_naming_artifact_row_and_output(twins, tmp_path):
    bundle = _copy(twins, "rpi4", tmp_path)
    samples = json.loads((bundle / "samples.json").read_text())
    probabilities = samples["expected"]["model.tflite"]["probabilities"]
    probabilities[7][1] = round(probabilities[7][1] + 0.01, 6)
    (bundle / "samples.json").write_text(json.dumps(samples))
    _rehash_samples(bundle)
    report = check_bundle(bundle)
    assert not report.passed
    failed = [c for c in report.checks if c.status == "fail"]
    assert [(c.kind, c.subject) for c in failed] == [("parity", "model.tflite")]
    classes = json.loads((bundle / "manifest.json").read_text())["classes"]
    assert f"rows[7] probabilities[1] (class {classes[1]!r})" in failed[0].detail
    assert _verify(bundle).exit_code == 1


def test_an_unlisted_file_fails(twins, tmp_path):
    bundle = _copy(twins, "cortex-m7", tmp_path)
    (bundle / "notes.txt").write_text("added later")
    failed = [c for c in check_bundle(bundle).checks if c.status == "fail"]
    assert [(c.kind, c.subject) for c in failed][0] == ("file", "notes.txt")
    # The runtime refuses to load a bundle holding a file it does not list, so no artifact can be scored either.
    parity = failed[1:]
    assert parity and all(c.kind == "parity" and "notes.txt is in the bundle but not listed" in c.detail
                          for c in parity)


def _with_unknown_key(twins, tmp_path):
    bundle = _copy(twins, "cortex-m7", tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["surprise"] = 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle, manifest


def test_an_unknown_manifest_key_fails_a_strict_schema(twins, tmp_path):
    """Against a strict schema written here: every key a fresh manifest has, no other."""
    fresh = json.loads((twins["cortex-m7"].bundles[0] / "manifest.json").read_text())
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "additionalProperties": False, "properties": {k: {} for k in fresh}}
    check = next(c for c in check_bundle(twins["cortex-m7"].bundles[0], schema=schema).checks if c.kind == "schema")
    assert check.status == "pass"
    bundle, _ = _with_unknown_key(twins, tmp_path)
    check = next(c for c in check_bundle(bundle, schema=schema).checks if c.kind == "schema")
    assert check.status == "fail" and "'surprise'" in check.detail


def test_an_unknown_manifest_key_fails_the_runtime_schema(twins, tmp_path):
    assert _verify(twins["cortex-m7"].bundles[0]).exit_code == 0
    bundle, _ = _with_unknown_key(twins, tmp_path)
    result = _verify(bundle)
    assert result.exit_code == 1 and "FAIL  schema" in result.output and "surprise" in result.output
    refused = [line for line in result.output.splitlines() if line.startswith("FAIL  manifest")]
    assert len(refused) == 1 and "surprise" in refused[0]  # the runtime refuses the unknown key too
    assert "identity  (none" in result.output and "parity" not in result.output


def test_an_unreadable_bundle_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing.tar.gz"):
        result = _verify(path)
        assert result.exit_code == 2
        assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_synthetic_samples_setting_is_read_from_edgeml_toml(tmp_path):
    (tmp_path / "edgeml.toml").write_text("[build]\nsynthetic_samples = true\n")
    assert resolve({}, cwd=tmp_path).synthetic_samples is True
    assert resolve({}, cwd=tmp_path / "elsewhere").synthetic_samples is False


# --- the rows: every class, category, missing value and range end ---------------------------------


def _device(kind: str, value):
    """A raw value as the device reads it; None for missing."""
    if kind == "categorical":
        return to_category(value) or None
    if kind == "datetime":
        return to_datetime(value)
    v = (to_boolean if kind == "boolean" else to_number)(value)
    return None if math.isnan(v) else v


def _assert_rows_cover(rows: list[dict], test, kinds: dict[str, str], label: str, classes: set) -> None:
    """``rows`` are test rows, with every class, every category and boolean value, a missing value wherever the
    test split has one, and both ends of each numeric range (as a device reads the values)."""
    assert len(rows) >= SAMPLE_ROWS

    def key(r):
        return tuple(json.dumps(None if _device(kinds[n], r[n]) is None else r[n], default=str) for n in kinds)

    true_label = {key(r): r[label] for r in test.to_dict("records")}
    assert all(key(r) in true_label for r in rows), "a sample row is not a test row"
    assert {true_label[key(r)] for r in rows} == classes
    for name, kind in kinds.items():
        in_test = [_device(kind, v) for v in test[name].tolist()]
        in_rows = [_device(kind, r[name]) for r in rows]
        if None in in_test:
            assert None in in_rows, f"no sample row misses {name}"
        present = [v for v in in_test if v is not None]
        if kind in ("categorical", "boolean"):
            assert set(present) <= set(in_rows), f"{name}: categories {set(present) - set(in_rows)} not sampled"
        elif kind == "numeric":
            assert min(present) in in_rows and max(present) in in_rows, f"{name}: a range end is not sampled"


def test_sample_rows_of_a_seeded_frame_cover_every_class_category_missing_value_and_range_end():
    """The demo data with values blanked in every column and a boolean column, through the build's picking."""
    from edgeml.data.demo import DEMO_LABEL, demo_frame
    from edgeml.data.prepare import prepare

    rng = np.random.default_rng(11)
    frame = demo_frame(rows=1200, seed=4).astype(object)
    frame["serviced"] = rng.choice(np.array(["yes", "no"], dtype=object), len(frame))
    for name in frame.columns.drop(DEMO_LABEL):
        frame.loc[rng.random(len(frame)) < 0.03, name] = None
    data = prepare(frame, DEMO_LABEL, seed=3)
    kinds = {c.name: c.kind for c in data.inputs.columns}
    assert set(kinds.values()) == {"numeric", "categorical", "boolean", "datetime"}, kinds
    test = data.split.test
    assert all(test[name].isna().any() for name in kinds), "every input column should miss a value in the test split"
    rows = list(pick_samples(data, seed=3))
    assert rows == list(pick_samples(data, seed=3))
    _assert_rows_cover(rows, test, kinds, DEMO_LABEL, set(data.classes))


@pytest.fixture(scope="module")
def telco(datasets, tmp_path_factory):
    path = datasets / "telco-churn.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    root = tmp_path_factory.mktemp("telco")
    settings = dict(data=str(path), label="Churn", drop=TELCO_DROP, estimators=("lgbm",), max_iter=2, seed=3)
    real = build_bundle(root / "telco-1", **settings)
    synthetic = build_bundle(root / "synthetic" / "telco-1", synthetic_samples=True, **settings)
    return real, synthetic


def test_sample_rows_cover_every_class_category_missing_value_and_range_end(telco):
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    result = telco[0]
    manifest = result.manifest.to_dict()
    samples = json.loads((result.bundle_dir / "samples.json").read_text())
    data = prepare(read_table(manifest["provenance"]["data"]["source"]).frame, "Churn", drop=TELCO_DROP, seed=3)
    assert manifest["samples"]["rows"] == len(samples["rows"])
    assert set(samples["expected"]) == {a["path"] for a in manifest["artifacts"]}
    assert set(samples["expected"]["model.onnx"]["labels"]) == {"No", "Yes"}
    kinds = {c["name"]: c["kind"] for c in manifest["inputs"]}
    assert data.split.test["TotalCharges"].map(lambda v: _device("numeric", v) is None).any(), \
        "the telco test split should hold a missing TotalCharges"
    _assert_rows_cover(samples["rows"], data.split.test, kinds, "Churn", {"No", "Yes"})


def test_synthetic_sample_rows_hold_no_training_row_and_verify(telco):
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    result = telco[1]
    manifest = result.manifest.to_dict()
    samples = json.loads((result.bundle_dir / "samples.json").read_text())
    assert manifest["samples"]["source"] == samples["source"] == "synthetic"
    assert len(samples["rows"]) >= SAMPLE_ROWS
    data = prepare(read_table(manifest["provenance"]["data"]["source"]).frame, "Churn", drop=TELCO_DROP, seed=3)
    kinds = {c["name"]: c["kind"] for c in manifest["inputs"]}

    def key(row):  # as a device holds the row: numbers in float32
        values = (_device(kinds[n], row[n]) for n in kinds)
        return tuple(float(np.float32(v)) if isinstance(v, float) else v for v in values)

    train = {key(r) for r in data.split.train.to_dict("records")}
    assert not [r for r in samples["rows"] if key(r) in train]
    for name, ref in manifest["reference"]["columns"].items():  # every category the reference knows is sampled
        if ref.get("categories"):
            assert set(ref["categories"]) <= {r[name] for r in samples["rows"]}
    result = _verify(result.bundle_dir)
    assert result.exit_code == 0, result.output
