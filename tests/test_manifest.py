"""The typed manifest: every section read strictly, the JSON Schema made from the same sections, corruptions named."""

from __future__ import annotations

import copy
import json
import re
import shutil
from importlib import resources

import jsonschema
import pytest

from edgeml_runtime import Model
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError
from edgeml_runtime.manifest import SECTIONS, Manifest, json_schema

SCHEMA = json.loads(resources.files("edgeml_runtime").joinpath("schemas/manifest.schema.json").read_text())

#: Valid sections a demo bundle does not have (as other builds write them: an int8 ONNX, a Cortex-M TFLite file,
#: a forest in matrix form, a boolean input).
METRIC_DROP = {"metric": "accuracy", "fp32": 0.95, "value": 0.948, "drop": 0.002, "allowed": 0.01, "within": True}
SAMPLES = {"path": "samples.json", "bytes": 1234, "sha256": "0" * 64, "rows": 60, "source": "test"}
QUANTIZATION = {"method": "static", "ops": ["Gemm", "MatMul"], "weight_type": "int8", "per_channel": True,
                "activation_type": "uint8", "calibration_rows": 1000, "bytes_fp32": 5000, "bytes_int8": 2000}
TFLITE_MICRO = {"interpreter": "tflite-micro", "ran": True, "rows": 300, "max_diff": 0.0, "arena_head": 400,
                "arena_tail": 2928, "arena_min": 3312, "arena_margin": 16, "arena_bytes": 3328}
TFLITE_MICRO_SKIPPED = {"interpreter": "tflite-micro", "ran": False, "why": "tflite-micro does not import here"}
GEMM_TREES = {"form": "gemm", "trees": 9, "max_internal_nodes": 7, "max_leaves": 8, "compare": "LESS_EQUAL"}
BOOLEAN_INPUT = {"name": "door_open", "kind": "boolean", "features": ["door_open"], "categories": [], "range": None,
                 "missing_rate": 0.0, "dtype": "bool", "number_format": None, "date_order": None, "parts": []}
BOOLEAN_REFERENCE = {"kind": "boolean", "monitored": True, "shares": [0.4, 0.6], "missing_rate": 0.05}
NUMERIC_OUTPUT = {"kind": "numeric", "edges": [440.5, 452.0], "shares": [0.3, 0.4, 0.3], "split": "valid"}
RELATIVE_TOLERANCE = {"kind": "relative", "rtol": 3.0517578125e-05, "scale": 495.5}
DECISION = {"threshold": 0.235, "metric": "f1", "reason": "tuned for f1 on the validation predictions",
            "positives": 51, "rows": 1500, "valid": 0.71, "argmax": 0.55}


def full(demo_bundle) -> dict:
    """The demo bundle's manifest with every optional section filled in (valid values)."""
    d = json.loads((demo_bundle / "manifest.json").read_text())
    d["dropped"] = [{"name": "UDI", "reason": "identifier"}]
    d["artifacts"][1]["metric_drop"] = dict(METRIC_DROP)
    d["artifacts"][1]["transform"] |= {"trees": dict(GEMM_TREES), "tflite_micro": dict(TFLITE_MICRO_SKIPPED)}
    d["artifacts"][2]["transform"] |= {"quantization": dict(QUANTIZATION), "tflite_micro": dict(TFLITE_MICRO)}
    d["verification"][1]["metric_drop"] = dict(METRIC_DROP)
    d["samples"] = dict(SAMPLES)
    d["decision"] = dict(DECISION)
    d["inputs"].append(dict(BOOLEAN_INPUT))
    d["reference"]["columns"]["door_open"] = dict(BOOLEAN_REFERENCE)
    d["search"]["trial_log"][0] |= {"arena_bytes": 3328, "unmapped": ["GATHER_ND"]}
    return d


def regression(demo_bundle) -> dict:
    """:func:`full`, as a regression bundle's manifest (no classes; the output reference bins values)."""
    d = full(demo_bundle)
    d |= {"task": "regression", "classes": None}
    del d["decision"]  # a threshold is for two classes
    d["reference"]["output"] = dict(NUMERIC_OUTPUT)
    for a in d["artifacts"]:
        a["outputs"] = {"value": "variable"}
    for v in d["verification"]:
        v["tolerance"] = dict(RELATIVE_TOLERANCE)
    d["provenance"]["data"]["label_outliers"] = [{"row": 474, "value": 99_999_999_999.0}]
    return d


#: Where each section sits in a manifest, as (name in $defs, path in messages, path as keys and indices), in the
#: manifest of :func:`full` (of :func:`regression` for the sections in ``REGRESSION``).
REGRESSION = {"numeric_output", "relative_tolerance", "label_outlier"}
PLACES = [
    ("manifest", "", ()),
    ("target", "target", ("target",)),
    ("budgets", "target.budgets", ("target", "budgets")),
    ("input_column", "inputs[0]", ("inputs", 0)),
    ("dropped", "dropped[0]", ("dropped", 0)),
    ("artifact", "artifacts[1]", ("artifacts", 1)),
    ("file", "artifacts[1].files['required_operators.config']",
     ("artifacts", 1, "files", "required_operators.config")),
    ("transform", "artifacts[1].transform", ("artifacts", 1, "transform")),
    ("gemm_trees", "artifacts[1].transform.trees", ("artifacts", 1, "transform", "trees")),
    ("traversal_trees", "artifacts[2].transform.trees", ("artifacts", 2, "transform", "trees")),
    ("quantization", "artifacts[2].transform.quantization", ("artifacts", 2, "transform", "quantization")),
    ("tflite_micro_run", "artifacts[2].transform.tflite_micro", ("artifacts", 2, "transform", "tflite_micro")),
    ("tflite_micro_skipped", "artifacts[1].transform.tflite_micro", ("artifacts", 1, "transform", "tflite_micro")),
    ("metric_drop", "artifacts[1].metric_drop", ("artifacts", 1, "metric_drop")),
    ("metrics", "metrics", ("metrics",)),
    ("verification", "verification[1]", ("verification", 1)),
    ("absolute_tolerance", "verification[1].tolerance", ("verification", 1, "tolerance")),
    ("relative_tolerance", "verification[1].tolerance", ("verification", 1, "tolerance")),
    ("not_shipped", "not_shipped[0]", ("not_shipped", 0)),
    ("reference", "reference", ("reference",)),
    ("numeric_reference", "reference.columns['rpm']", ("reference", "columns", "rpm")),
    ("categorical_reference", "reference.columns['machine_type']", ("reference", "columns", "machine_type")),
    ("boolean_reference", "reference.columns['door_open']", ("reference", "columns", "door_open")),
    ("unmonitored_reference", "reference.columns['timestamp']", ("reference", "columns", "timestamp")),
    ("classes_output", "reference.output", ("reference", "output")),
    ("numeric_output", "reference.output", ("reference", "output")),
    ("search", "search", ("search",)),
    ("search_budgets", "search.budgets", ("search", "budgets")),
    ("search_validation", "search.validation", ("search", "validation")),
    ("search_refit", "search.refit", ("search", "refit")),
    ("frontier_check", "search.frontier_check", ("search", "frontier_check")),
    ("search_candidate", "search.frontier_check.candidates[0]", ("search", "frontier_check", "candidates", 0)),
    ("candidate_cost", "search.frontier_check.candidates[0].measured",
     ("search", "frontier_check", "candidates", 0, "measured")),
    ("trial", "search.trial_log[0]", ("search", "trial_log", 0)),
    ("provenance", "provenance", ("provenance",)),
    ("data_provenance", "provenance.data", ("provenance", "data")),
    ("label_outlier", "provenance.data.label_outliers[0]", ("provenance", "data", "label_outliers", 0)),
    ("model_provenance", "provenance.model", ("provenance", "model")),
    ("samples", "samples", ("samples",)),
    ("decision", "decision", ("decision",)),
    ("report", "report", ("report",)),
]


def test_every_section_has_a_place_in_the_corruption_tests():
    assert {name for name, _, _ in PLACES} == set(SCHEMA["$defs"]) == {*SECTIONS, "input_column"}


def test_the_schema_file_is_made_from_the_sections():
    assert SCHEMA == json_schema()
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for name, part in SCHEMA["$defs"].items():
        assert part["additionalProperties"] is False and part["required"], name


def test_a_built_manifest_reads_and_writes_back_unchanged(demo_bundle):
    for d in (full(demo_bundle), regression(demo_bundle)):
        jsonschema.validate(d, SCHEMA)
        assert Manifest.from_dict(d).to_dict() == d
    d = full(demo_bundle)
    m = Manifest.from_dict(d)
    assert m.artifacts[1].metric_drop.within and m.samples.source == "test" and m.dropped[0].reason == "identifier"
    assert m.provenance.model.estimator_class == d["provenance"]["model"]["class"]
    assert m.formats == tuple(d["target"]["formats"]) and m.classes == tuple(d["classes"])
    assert m.artifacts[2].transform.trees.depth == d["artifacts"][2]["transform"]["trees"]["depth"]
    assert m.artifacts[1].transform.trees.max_leaves == 8 and m.artifacts[2].transform.tflite_micro.arena_bytes == 3328
    assert not m.artifacts[1].transform.tflite_micro.ran
    assert m.reference.columns["rpm"].edges == tuple(d["reference"]["columns"]["rpm"]["edges"])
    assert m.reference.columns["door_open"].shares == (0.4, 0.6) and not m.reference.columns["timestamp"].monitored
    assert m.search.trial_log[0].unmapped == ("GATHER_ND",)
    assert m.search.budgets.tflite_ops == d["search"]["budgets"]["tflite_ops"]


def _at(d: dict, keys: tuple):
    for k in keys:
        d = d[k]
    return d


def _where(path: str, key: str) -> str:
    return re.escape(f"manifest.json: {path}.{key}" if path else f"manifest.json: {key}")


def _wrong_value(schema: dict):
    """A value of the wrong JSON type for ``schema``: a number where an object goes, an object elsewhere."""
    def holds_objects(rule: dict) -> bool:
        return rule.get("type") == "object" or "$ref" in rule or "oneOf" in rule

    objects = holds_objects(schema) or any(map(holds_objects, schema.get("anyOf", ())))
    return 17 if objects else {"not": "this"}


def _expect_refused(d: dict, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        Manifest.from_dict(d)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(d)


@pytest.mark.parametrize("name,path,keys", PLACES, ids=[p[0] for p in PLACES])
def test_each_corruption_of_each_section_is_refused_naming_the_key(demo_bundle, name, path, keys):
    base = (regression if name in REGRESSION else full)(demo_bundle)
    part = SCHEMA["$defs"][name]
    drafts_lack = SECTIONS[name].bundle_requires if name in SECTIONS else ()
    for key in part["required"]:
        if (name, key) == ("manifest", "format_version") or key in drafts_lack:
            continue  # format_version is checked first (test_runtime_model.py); drafts: the last test
        d = copy.deepcopy(base)
        del _at(d, keys)[key]
        _expect_refused(d, _where(path, key) + " is missing; rebuild the bundle")
    d = copy.deepcopy(base)
    _at(d, keys)["colour"] = "blue"
    _expect_refused(d, _where(path, "colour") + " is not a key this edgeml-runtime knows")
    for key, rule in part["properties"].items():
        if key == "format_version":
            continue
        d = copy.deepcopy(base)
        _at(d, keys)[key] = _wrong_value(rule)
        _expect_refused(d, _where(path, key) + r" is .*, expected ")


def test_a_bundle_is_refused_at_load_naming_the_corrupt_key(demo_bundle, tmp_path):
    bundle = shutil.copytree(demo_bundle, tmp_path / "b")
    d = json.loads((bundle / "manifest.json").read_text())
    del d["artifacts"][1]["sha256"]
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match=r"manifest.json: artifacts\[1\].sha256 is missing; rebuild the bundle"):
        read_manifest(bundle)
    with pytest.raises(BundleError, match=r"artifacts\[1\].sha256 is missing"):
        Model.load(bundle)


def test_semantic_rules_beyond_the_keys(demo_bundle):
    d = full(demo_bundle)
    d["classes"] = None
    with pytest.raises(BundleError, match="manifest.json: classes is empty, but a classification bundle lists"):
        Manifest.from_dict(d)
    d = full(demo_bundle)
    d["artifacts"].append(d["artifacts"][0])
    with pytest.raises(BundleError, match="artifacts lists model.onnx more than once"):
        Manifest.from_dict(d)
    d = regression(demo_bundle)
    d["verification"][1]["tolerance"] = {"kind": "absolute", "atol": 1e-4}
    with pytest.raises(BundleError, match=r"manifest.json: verification\[1\].tolerance is 'absolute', but a "
                                          "regression bundle's outputs are held to relative tolerances"):
        Manifest.from_dict(d)
    d = full(demo_bundle)
    d["verification"][0]["tolerance"] = dict(RELATIVE_TOLERANCE)
    with pytest.raises(BundleError, match=r"verification\[0\].tolerance is 'relative', but a classification "
                                          "bundle's outputs are held to absolute tolerances"):
        Manifest.from_dict(d)
    d["verification"][0]["tolerance"] = {"kind": "absolute", "atol": 0}
    with pytest.raises(BundleError, match=r"verification\[0\].tolerance.atol is 0, expected a positive finite"):
        Manifest.from_dict(d)
    d = full(demo_bundle)
    d["artifacts"][0]["sha256"] = "ABC"
    with pytest.raises(BundleError, match=r"artifacts\[0\].sha256 is 'ABC', expected a SHA-256 hex digest"):
        Manifest.from_dict(d)


def test_a_draft_may_lack_only_what_verification_measures(demo_bundle):
    """While the build verifies an artifact, the runtime loads a manifest without its test metrics (or samples) yet."""
    d = full(demo_bundle)
    del d["artifacts"][2]["test_metrics"], d["metrics"]["test"], d["samples"]
    m = Manifest.from_dict(d, draft=True)
    assert m.artifacts[2].test_metrics is None and m.samples is None
    with pytest.raises(BundleError, match=r"manifest.json is a draft: it lacks samples, metrics.test, "
                                          r"artifacts\[2\].test_metrics, which a build writes only once every "
                                          "artifact is verified"):
        Manifest.from_dict(d)  # a device never scores with one
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(d)  # a bundle always has them
    assert {"samples", "inputs"} <= set(SCHEMA["$defs"]["manifest"]["required"])


#: A reference that does not fit the runtime's counters, and how the manifest names it.
UNFIT = [
    ("rpm", "shares", [0.5, 0.5], r"reference.columns\['rpm'\].shares has 2 values, but \d+ edges make \d+ bins"),
    ("rpm", "edges", [2.0, 1.0], r"reference.columns\['rpm'\].edges is \[2.0, 1.0\], expected strictly increasing"),
    ("rpm", "range", [9.0, 1.0], r"reference.columns\['rpm'\].range is \[9.0, 1.0\], expected \[lowest, highest\]"),
    ("rpm", "missing_rate", 1.5, r"reference.columns\['rpm'\].missing_rate is 1.5, expected a number from 0 to 1"),
    ("machine_type", "shares", [0.2, 0.8],
     r"reference.columns\['machine_type'\].shares has 2 values, but 3 categories and 'other' make 4 bins"),
    ("door_open", "shares", [1.0], r"reference.columns\['door_open'\].shares has 1 values, but false and true make 2"),
    ("timestamp", "monitored", True, r"reference.columns\['timestamp'\].kind is 'datetime', expected one of 'numeric'"),
    ("door_open", "kind", "numeric", r"reference.columns\['door_open'\].edges is missing"),
]


@pytest.mark.parametrize("column,key,value,match", UNFIT, ids=[f"{c}.{k}" for c, k, _, _ in UNFIT])
def test_a_reference_that_does_not_fit_its_bins_is_refused(demo_bundle, column, key, value, match):
    d = full(demo_bundle)
    d["reference"]["columns"][column][key] = value
    with pytest.raises(BundleError, match="manifest.json: " + match):
        Manifest.from_dict(d)


def test_a_bad_reference_no_longer_waits_for_the_fleet(demo_bundle):
    """The mismatch the fleet would meet as a ValueError from statistics_from_counts is refused at load."""
    from edgeml_runtime.distributions import statistics_from_counts

    d = full(demo_bundle)
    entry = d["reference"]["columns"]["rpm"]
    entry["shares"] = entry["shares"][:-1]
    with pytest.raises(ValueError, match="do not fit a reference"):
        statistics_from_counts(entry, [1] * (len(entry["edges"]) + 1))
    with pytest.raises(BundleError, match=r"reference.columns\['rpm'\].shares has"):
        Manifest.from_dict(d)


def test_the_reference_describes_the_inputs_and_the_task(demo_bundle):
    d = full(demo_bundle)
    del d["reference"]["columns"]["door_open"]
    with pytest.raises(BundleError, match="reference.columns describes timestamp, .*tool_wear_min, but inputs are "
                                          ".*, door_open: one entry per input column"):
        Manifest.from_dict(d)
    d = full(demo_bundle)
    d["reference"]["columns"]["door_open"] = {"kind": "categorical", "monitored": False, "reason": "r"}
    with pytest.raises(BundleError, match=r"reference.columns\['door_open'\].kind is 'categorical', but inputs has "
                                          "'door_open' as a boolean column"):
        Manifest.from_dict(d)
    d = full(demo_bundle)
    d["reference"]["output"]["classes"] = d["reference"]["output"]["classes"][::-1]
    with pytest.raises(BundleError, match=r"reference.output.classes is .*, but classes is"):
        Manifest.from_dict(d)
    d = full(demo_bundle)
    d["reference"]["output"] = dict(NUMERIC_OUTPUT)
    with pytest.raises(BundleError, match="reference.output.kind is 'numeric', but a classification bundle's"):
        Manifest.from_dict(d)


def test_search_budgets_may_leave_out_what_the_search_measured_with(demo_bundle):
    """The limits are required; speed_factor, n_inputs and the tflite_* measures may move out of the record."""
    d = full(demo_bundle)
    d["search"]["budgets"] = {k: d["search"]["budgets"][k] for k in ("max_model_bytes", "latency_budget_ms",
                                                                    "max_arena_bytes")}
    jsonschema.validate(d, SCHEMA)
    assert Manifest.from_dict(d).search.budgets.speed_factor is None
    d["search"]["budgets"]["tflite_overhead_bytes"] = [["fp32", "many"]]
    _expect_refused(d, r"search.budgets.tflite_overhead_bytes\[0\]\[1\] is 'many', expected an integer")


def test_a_learner_config_holds_json_scalars_or_lists_of_them(demo_bundle):
    d = full(demo_bundle)
    d["search"]["best_config"]["hidden"] = [64, 32]  # a layer shape
    assert Manifest.from_dict(json.loads(json.dumps(d))).search.best_config["hidden"] == (64, 32)
    d["search"]["best_config"]["hidden"] = {"layers": 2}
    _expect_refused(d, r"search.best_config\['hidden'\] is \{'layers': 2\}, expected a string, number, boolean, "
                       r"null or a list of them")
