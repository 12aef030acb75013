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

#: A valid metric drop and samples section, for the sections a demo bundle does not have.
METRIC_DROP = {"metric": "accuracy", "fp32": 0.95, "value": 0.948, "drop": 0.002, "allowed": 0.01, "within": True}
SAMPLES = {"path": "samples.json", "bytes": 1234, "sha256": "0" * 64, "rows": 60, "source": "test"}


def full(demo_bundle) -> dict:
    """The demo bundle's manifest with every optional section filled in (valid values)."""
    d = json.loads((demo_bundle / "manifest.json").read_text())
    d["dropped"] = [{"name": "UDI", "reason": "identifier"}]
    d["artifacts"][1]["metric_drop"] = dict(METRIC_DROP)
    d["verification"][1]["metric_drop"] = dict(METRIC_DROP)
    d["samples"] = dict(SAMPLES)
    return d


#: Where each section sits in a manifest, as (name in $defs, path in messages, path as keys and indices).
PLACES = [
    ("manifest", "", ()),
    ("target", "target", ("target",)),
    ("budgets", "target.budgets", ("target", "budgets")),
    ("input_column", "inputs[0]", ("inputs", 0)),
    ("dropped", "dropped[0]", ("dropped", 0)),
    ("artifact", "artifacts[1]", ("artifacts", 1)),
    ("transform", "artifacts[1].transform", ("artifacts", 1, "transform")),
    ("metric_drop", "artifacts[1].metric_drop", ("artifacts", 1, "metric_drop")),
    ("metrics", "metrics", ("metrics",)),
    ("verification", "verification[1]", ("verification", 1)),
    ("not_shipped", "not_shipped[0]", ("not_shipped", 0)),
    ("reference", "reference", ("reference",)),
    ("search", "search", ("search",)),
    ("provenance", "provenance", ("provenance",)),
    ("data_provenance", "provenance.data", ("provenance", "data")),
    ("model_provenance", "provenance.model", ("provenance", "model")),
    ("samples", "samples", ("samples",)),
]


def test_every_section_has_a_place_in_the_corruption_tests():
    assert {name for name, _, _ in PLACES} == set(SCHEMA["$defs"]) == {*SECTIONS, "input_column"}


def test_the_schema_file_is_made_from_the_sections():
    assert SCHEMA == json_schema()
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for name, part in SCHEMA["$defs"].items():
        assert part["additionalProperties"] is False and part["required"], name


def test_a_built_manifest_reads_and_writes_back_unchanged(demo_bundle):
    d = full(demo_bundle)
    jsonschema.validate(d, SCHEMA)
    m = Manifest.from_dict(d)
    assert m.to_dict() == d
    assert m.artifacts[1].metric_drop.within and m.samples.source == "test" and m.dropped[0].reason == "identifier"
    assert m.provenance.model.estimator_class == d["provenance"]["model"]["class"]
    assert m.formats == tuple(d["target"]["formats"]) and m.classes == tuple(d["classes"])


def _at(d: dict, keys: tuple):
    for k in keys:
        d = d[k]
    return d


def _where(path: str, key: str) -> str:
    return re.escape(f"manifest.json: {path}.{key}" if path else f"manifest.json: {key}")


def _wrong_value(schema: dict):
    """A value of the wrong JSON type for ``schema``: a number where an object goes, an object elsewhere."""
    objects = schema.get("type") == "object" or "$ref" in schema or "oneOf" in schema
    return 17 if objects else {"not": "this"}


def _expect_refused(d: dict, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        Manifest.from_dict(d)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(d)


@pytest.mark.parametrize("name,path,keys", PLACES, ids=[p[0] for p in PLACES])
def test_each_corruption_of_each_section_is_refused_naming_the_key(demo_bundle, name, path, keys):
    base = full(demo_bundle)
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
    d = full(demo_bundle)
    d["artifacts"][0]["sha256"] = "ABC"
    with pytest.raises(BundleError, match=r"artifacts\[0\].sha256 is 'ABC', expected a SHA-256 hex digest"):
        Manifest.from_dict(d)


def test_a_draft_may_lack_only_what_verification_measures(demo_bundle):
    """While the build verifies an artifact, the runtime loads a manifest without its test metrics yet."""
    d = full(demo_bundle)
    del d["artifacts"][2]["test_metrics"], d["metrics"]["test"]
    assert Manifest.from_dict(d).artifacts[2].test_metrics is None
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(d)  # a bundle always has them
