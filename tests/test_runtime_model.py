"""The runtime's Python API on a real bundle: scoring, input checks, artifact integrity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeml_runtime import BundleError, InputError, Model, RowError


@pytest.fixture(scope="module")
def model(demo_bundle):
    return Model.load(demo_bundle)


@pytest.fixture(scope="module")
def records(demo_rows):
    import csv

    with open(demo_rows, newline="") as f:
        return list(csv.DictReader(f))


def test_predicts_every_record_with_probabilities_that_sum_to_one(model, records):
    result = model.predict(records)
    assert len(result) == len(records)
    assert set(result.labels) <= set(model.classes)
    assert result.probabilities.shape == (len(records), len(model.classes))
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the label is the most probable class, or for a binary bundle with a decision threshold, classes[1] above it
    cut = model.manifest.decision.threshold if model.manifest.decision is not None else None
    chosen = result.probabilities.argmax(axis=1) if cut is None else (result.probabilities[:, 1] > cut).astype(int)
    assert [model.classes[i] for i in chosen] == list(result.labels)


def test_column_mapping_and_records_agree(model, records):
    columns = {k: [r[k] for r in records] for k in records[0]}
    a, b = model.predict(records), model.predict(columns)
    assert list(a.labels) == list(b.labels)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_typed_values_score_like_their_text(model, records):
    numeric = [c.name for c in model.manifest.schema.columns if c.kind == "numeric"]
    typed = [{k: (float(v) if k in numeric and v else v) for k, v in r.items()} for r in records]
    np.testing.assert_allclose(model.predict(typed).probabilities, model.predict(records).probabilities)


def test_missing_values_are_imputed_not_errors(model, records):
    blank = {k: ("" if k != "timestamp" else v) for k, v in records[0].items()}
    nulls = {k: (None if k != "timestamp" else v) for k, v in records[0].items()}
    assert len(model.predict([blank, nulls])) == 2


def test_unknown_category_scores(model, records):
    cat = next(c.name for c in model.manifest.schema.columns if c.kind == "categorical")
    r = dict(records[0], **{cat: "never-seen-before"})
    assert len(model.predict([r])) == 1


def test_missing_column_names_it(model, records):
    col = model.manifest.schema.names[1]
    stripped = [{k: v for k, v in r.items() if k != col} for r in records]
    with pytest.raises(InputError, match=repr(col)):
        model.predict(stripped)


def test_extra_columns_are_reported_and_ignored(model, records):
    result = model.predict([dict(r, serial="X-1") for r in records])
    assert result.ignored_columns == ("serial",)
    np.testing.assert_array_equal(result.probabilities, model.predict(records).probabilities)


def test_wrong_type_names_row_and_column(model, records):
    col = next(c.name for c in model.manifest.schema.columns if c.kind == "numeric")
    bad = [dict(r) for r in records[:5]]
    bad[3][col] = "twelve"
    with pytest.raises(RowError) as err:
        model.predict(bad)
    assert err.value.row == 4 and err.value.column == col
    assert "'twelve'" in str(err.value) and "row 4" in str(err.value)


def test_skip_scores_the_other_rows(model, records):
    col = next(c.name for c in model.manifest.schema.columns if c.kind == "numeric")
    bad = [dict(r) for r in records[:6]]
    bad[1][col] = {"nested": 1}
    bad[4].pop(col)
    result = model.predict(bad, on_error="skip")
    assert list(result.rows) == [0, 2, 3, 5]
    assert [e.row for e in result.errors] == [2, 5]
    assert "no such field" in result.errors[1].reason
    good = model.predict([bad[i] for i in (0, 2, 3, 5)])
    np.testing.assert_array_equal(result.probabilities, good.probabilities)


def test_bad_datetime_is_a_row_error(model, records):
    bad = [dict(records[0], timestamp="yesterday")]
    with pytest.raises(RowError, match="ISO 8601"):
        model.predict(bad)


def test_tampered_artifact_is_refused(demo_bundle, tmp_path):
    copy = shutil.copytree(demo_bundle, tmp_path / "b")
    onnx_file = copy / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match the manifest"):
        Model.load(copy)


def test_missing_artifact_and_manifest_are_named(demo_bundle, tmp_path):
    copy = shutil.copytree(demo_bundle, tmp_path / "b")
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is listed in the manifest but missing"):
        Model.load(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        Model.load(copy)


def test_newer_manifest_format_is_refused(demo_bundle, tmp_path):
    copy = shutil.copytree(demo_bundle, tmp_path / "b")
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format_version 99"):
        Model.load(copy)


def test_loads_from_the_tarball(demo_bundle, records):
    archive = demo_bundle.parent / f"{demo_bundle.name}.tar.gz"
    a, b = Model.load(archive).predict(records), Model.load(demo_bundle).predict(records)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_artifact_taking_an_input_the_schema_does_not_produce_is_refused_at_load(demo_bundle, tmp_path):
    copy = shutil.copytree(demo_bundle, tmp_path / "b")
    m = json.loads((copy / "manifest.json").read_text())
    rpm = next(c for c in m["inputs"] if c["name"] == "rpm")
    rpm["features"] = ["rpm_renamed"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"model.onnx takes input\(s\) 'rpm' that the manifest's inputs do not"):
        Model.load(copy, artifact="model.onnx")
