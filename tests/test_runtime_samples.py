"""``edgeml_runtime.samples``: a device reads its bundle's sample rows, scores them and compares, with no host code."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_env

from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError
from edgeml_runtime.manifest_artifacts import AbsoluteTolerance, RelativeTolerance
from edgeml_runtime.samples import Outputs, Samples, compare, read_samples, score_rows, self_test


def _rehash_samples(bundle):
    """Record samples.json's new size and hash in the manifest, as a careful forger would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / "samples.json").read_bytes()
    manifest["samples"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _edit_samples(bundle, edit):
    doc = json.loads((bundle / "samples.json").read_text())
    edit(doc)
    (bundle / "samples.json").write_text(json.dumps(doc))


def test_read_samples_gives_typed_rows_and_every_artifacts_outputs(demo_bundle):
    manifest = read_manifest(demo_bundle)
    samples = read_samples(demo_bundle, manifest)
    assert samples.source == manifest.samples.source == "test"
    assert samples.columns == tuple(manifest.schema.names)
    assert len(samples.rows) == manifest.samples.rows >= 50
    assert set(samples.expected) == {a.path for a in manifest.artifacts}
    for outputs in samples.expected.values():
        assert len(outputs) == len(samples.rows) and outputs.values is None
        assert set(outputs.labels) <= set(manifest.classes)
        assert outputs.probabilities.shape == (len(samples.rows), len(manifest.classes))
        assert np.allclose(outputs.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert Samples.from_dict(samples.to_dict()).to_dict() == samples.to_dict()


def test_scoring_the_rows_again_gives_exactly_the_stored_outputs(demo_bundle):
    manifest = read_manifest(demo_bundle)
    samples = read_samples(demo_bundle, manifest)
    for artifact in manifest.artifacts:
        got = score_rows(demo_bundle, artifact.path, samples.rows)
        assert got.to_dict() == samples.expected[artifact.path].to_dict()
    results = self_test(demo_bundle, manifest)
    assert [r.artifact for r in results] == [a.path for a in manifest.artifacts]
    assert all(r.passed and r.rows == len(samples.rows) for r in results), [str(r) for r in results]


def test_a_changed_expected_output_is_reported_naming_artifact_row_and_output(demo_bundle, tmp_path):
    bundle = shutil.copytree(demo_bundle, tmp_path / "demo-1")
    artifact = read_manifest(bundle).artifacts[0].path

    def nudge(doc):
        p = doc["expected"][artifact]["probabilities"]
        p[7][1] = round(p[7][1] + 0.01, 6)

    _edit_samples(bundle, nudge)
    _rehash_samples(bundle)
    manifest = read_manifest(bundle)
    results = {r.artifact: r for r in self_test(bundle, manifest)}
    failed = results[artifact]
    assert not failed.passed and [(d.row, d.output) for d in failed.differences] == [(7, "probabilities[1]")]
    assert failed.label_mismatches == 0
    message = str(failed)
    assert message.startswith(f"{artifact}: 1 difference(s) on {failed.rows} rows: ")
    assert f"rows[7] probabilities[1] (class {manifest.classes[1]!r})" in message
    assert all(r.passed for a, r in results.items() if a != artifact)


def test_a_changed_label_is_a_label_difference(demo_bundle, tmp_path):
    bundle = shutil.copytree(demo_bundle, tmp_path / "demo-1")
    manifest = read_manifest(bundle)
    artifact, (first, second) = manifest.artifacts[0].path, manifest.classes
    samples = read_samples(bundle, manifest)
    probabilities = samples.expected[artifact].probabilities
    row = int(np.argmax(np.abs(probabilities[:, 0] - probabilities[:, 1])))  # the clearest row: no near tie
    stored = samples.expected[artifact].labels[row]

    def flip(doc):
        doc["expected"][artifact]["labels"][row] = second if stored == first else first

    _edit_samples(bundle, flip)
    _rehash_samples(bundle)
    found = self_test(bundle, read_manifest(bundle))[0]
    assert [(d.row, d.output, d.got) for d in found.differences] == [(row, "label", stored)]
    assert found.label_mismatches == 1 and f"rows[{row}] label: got {stored!r}" in str(found)


def test_a_samples_file_changed_without_the_manifest_is_refused(demo_bundle, tmp_path):
    bundle = shutil.copytree(demo_bundle, tmp_path / "demo-1")
    _edit_samples(bundle, lambda doc: doc["rows"].pop())
    with pytest.raises(BundleError, match=r"samples\.json does not match the manifest"):
        read_samples(bundle, read_manifest(bundle))


@pytest.mark.parametrize(("edit", "match"), [
    (lambda doc: doc.update(format=2), "is not a samples file of format 1"),
    (lambda doc: doc["rows"][3].pop(doc["columns"][0]), r"rows\[3\] is not an object with every column"),
    (lambda doc: doc["expected"].update({"model.onnx": {"labels": [0]}}), r"expected\['model\.onnx'\] must be"),
    (lambda doc: doc["expected"]["model.onnx"]["labels"].pop(), "labels need probabilities of shape"),
])
def test_a_malformed_samples_file_is_a_bundle_error_naming_what(demo_bundle, tmp_path, edit, match):
    bundle = shutil.copytree(demo_bundle, tmp_path / "demo-1")
    _edit_samples(bundle, edit)
    _rehash_samples(bundle)
    with pytest.raises(BundleError, match=match):
        read_samples(bundle, read_manifest(bundle))


# --- the comparison, on fixed outputs -----------------------------------------------------------------


PROBA = AbsoluteTolerance(atol=1e-4)


def _two_class(labels, probabilities):
    return Outputs(labels=tuple(labels), probabilities=np.array(probabilities, dtype=np.float64))


def test_a_near_tie_is_accepted_within_the_tolerance():
    expected = _two_class(["a", "b"], [[0.50003, 0.49997], [0.2, 0.8]])  # row 0: top-2 gap 6e-5 <= 1e-4
    flipped = _two_class(["b", "b"], [[0.49999, 0.50001], [0.2, 0.8]])  # each probability within 4e-5
    result = compare(expected, flipped, PROBA, ("a", "b"), artifact="model.onnx")
    assert result.passed and result.ties == 1 and result.label_mismatches == 0
    assert result.largest == pytest.approx(4e-5)
    assert str(result) == "model.onnx: 2 rows within 0.0001 (largest difference 4e-05)"


def test_the_same_flip_is_a_difference_when_the_gap_exceeds_the_tolerance():
    expected = _two_class(["a", "b"], [[0.5002, 0.4998], [0.2, 0.8]])  # gap 4e-4 > 1e-4: not a tie
    flipped = _two_class(["b", "b"], [[0.4999, 0.5001], [0.2, 0.8]])
    result = compare(expected, flipped, PROBA, ("a", "b"), artifact="m.tflite")
    assert not result.passed and result.ties == 0 and result.label_mismatches == 1
    assert [(d.row, d.output) for d in result.differences] == [(0, "label"), (0, "probabilities[0]"),
                                                               (0, "probabilities[1]")]
    assert "rows[0] label: got 'b', expected 'a'" in str(result)
    assert "rows[0] probabilities[0] (class 'a'): got 0.4999, expected 0.5002 (allowed difference 0.0001)" \
        in str(result)


def test_regression_values_are_compared_relative_to_the_outputs_scale():
    """rtol x scale either way, whatever the row's own value: near 0 as near 2000."""
    expected = Outputs(values=np.array([0.5, 2000.0, 3.0, 0.0]))
    got = Outputs(values=np.array([0.55, 2000.07, 3.07, 0.0601]))  # 0.05, 0.07, 0.07 and 0.0601 off
    tolerance = RelativeTolerance(rtol=3e-5, scale=2000.0)  # 0.06 allowed
    result = compare(expected, got, tolerance, artifact="model.onnx")
    assert [(d.row, d.output) for d in result.differences] == [(1, "value"), (2, "value"), (3, "value")]
    assert result.largest == pytest.approx(0.07)
    assert "rows[3] value: got 0.0601, expected 0 (allowed difference 0.06 = 3e-05 of the scale 2000)" \
        in str(result)
    assert compare(expected, got, RelativeTolerance(rtol=3e-5, scale=3000.0)).passed  # 0.09 allowed


def test_a_value_that_is_not_a_number_is_a_difference():
    result = compare(Outputs(values=np.array([1.0, 2.0])), Outputs(values=np.array([1.0, np.nan])),
                     RelativeTolerance(rtol=1e-4, scale=2.0))
    assert [(d.row, d.output) for d in result.differences] == [(1, "value")] and result.largest == np.inf


def test_a_tolerance_of_the_other_kind_is_refused():
    values = Outputs(values=np.array([1.0]))
    with pytest.raises(TypeError, match="values are compared with RelativeTolerance"):
        compare(values, values, PROBA)
    with pytest.raises(TypeError, match="2 class probabilities are compared with AbsoluteTolerance"):
        compare(_two_class(["a"], [[1, 0]]), _two_class(["a"], [[1, 0]]), RelativeTolerance(rtol=1, scale=1))


def test_outputs_of_another_shape_are_refused_naming_the_artifact():
    with pytest.raises(BundleError, match="model.int8.tflite gives values for 2 rows"):
        compare(_two_class(["a", "b"], [[1, 0], [0, 1]]), Outputs(values=np.zeros(2)), PROBA,
                artifact="model.int8.tflite")
    with pytest.raises(ValueError, match="either labels and probabilities"):
        Outputs(labels=("a",), values=np.zeros(1))


SELF_TEST = """
import json, sys
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.samples import self_test
results = self_test(sys.argv[1], read_manifest(sys.argv[1]))
heavy = sorted({n.split('.')[0] for n in sys.modules} & {'pandas', 'sklearn', 'scipy', 'flaml', 'edgeml', 'jsonschema'})
print(json.dumps({"passed": [r.passed for r in results], "heavy": heavy}))
"""


def test_a_device_self_tests_without_host_packages(demo_bundle):
    r = subprocess.run([sys.executable, "-c", SELF_TEST, str(demo_bundle)], capture_output=True, text=True,
                       env=run_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["heavy"] == [] and out["passed"] and all(out["passed"])
