"""The verify stage's one rule for shipping an artifact, held to the target's ``max_model_bytes``.

Real models on the demo data, exported and verified through ``edgeml_runtime`` by
:func:`edgeml.build.write_bundle`; only the profile's byte budget is changed.
"""

from __future__ import annotations

import dataclasses
import re
from functools import cache

import pytest

from edgeml import bundle
from edgeml.build import host_pipeline, write_bundle
from edgeml.data.demo import demo_table
from edgeml.data.prepare import prepare
from edgeml.errors import ExportError
from edgeml.export.artifacts import make_artifacts
from edgeml.export.registry import CompiledArtifact
from edgeml.models.estimators import StandardizedMLPClassifier
from edgeml.targets.profiles import load_target
from edgeml_runtime.bundle import read_manifest

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 50 epochs are plenty here


@cache
def fitted():
    table = demo_table(seed=3)
    data = prepare(table.frame, "failure", seed=0)
    mlp = StandardizedMLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    mlp.fit(data.X["train"], data.y["train"])
    return table, data, mlp, host_pipeline(data, mlp)


def sizes(target) -> dict[str, int]:
    """What the export stage makes for ``target``: file name -> bytes (what could not be made is left out)."""
    _, data, _, pipeline = fitted()
    made = make_artifacts(pipeline, data.inputs, data.task, data.classes, target, data.calibration, name="ship")
    return {m.file_name(): len(m.data) for m in made.made if isinstance(m, CompiledArtifact)}


def with_budget(name: str, limit: int):
    target = load_target(name)
    return dataclasses.replace(target, budgets=dataclasses.replace(target.budgets, max_model_bytes=limit))


def bundled(tmp_path, target):
    table, data, mlp, pipeline = fitted()
    search = {"learners": ["mlp"], "metric": "none (trained directly, not searched)", "best_learner": "mlp",
              "best_config": {}, "best_valid_loss": None, "best_model_bytes": None,
              "best_predicted_latency_ms": None,
              "budgets": {"max_model_bytes": None, "latency_budget_ms": None, "max_arena_bytes": None},
              "trials": 0, "seconds": 0.0, "trial_log": [],
              "frontier": []}
    out = tmp_path / target.name
    write_bundle(out, pipeline, data, target, name="ship", version="1", search=search,
                 provenance=bundle.provenance_record(table, data, 0, "mlp", mlp, {}))
    return out, read_manifest(out)


def test_a_derived_artifact_over_max_model_bytes_is_not_shipped_and_says_why(tmp_path):
    made = sizes(load_target("rpi4"))
    limit = made["model.tflite"]
    over = sorted(name for name, size in made.items() if size > limit)
    assert made["model.onnx"] <= limit and over == ["model.int8.ort", "model.ort"]  # what this test relies on
    out, manifest = bundled(tmp_path, with_budget("rpi4", limit))
    shipped = {a.path for a in manifest.artifacts}
    assert {"model.onnx", "model.tflite"} <= shipped and not shipped & set(over)
    refused = {(n.format, n.precision): n for n in manifest.not_shipped}
    for precision, name in (("fp32", "model.ort"), ("int8", "model.int8.ort")):
        n = refused[("ort", precision)]
        assert not n.applicable
        assert n.reason == (f"not shipped for rpi4: the file is {made[name]:,} bytes, over budgets.max_model_bytes "
                            f"{limit:,}; raise the budget in a profile that extends this one")
        assert not (out / name).exists()
    assert not {v.artifact for v in manifest.verification} & set(over)  # refused before it was scored


def test_model_onnx_over_max_model_bytes_fails_a_build_for_a_target_that_runs_onnx(tmp_path):
    limit = sizes(load_target("rpi4"))["model.onnx"] - 1
    with pytest.raises(ExportError, match=re.escape(f"over target rpi4's max_model_bytes {limit:,} once "
                                                    "preprocessing is included; raise the budget")):
        bundled(tmp_path, with_budget("rpi4", limit))
    assert not (tmp_path / "rpi4").exists() and not list(tmp_path.glob(".rpi4.partial"))


def test_model_onnx_is_only_the_reference_where_the_target_runs_tflite(tmp_path):
    made = sizes(load_target("coral-edgetpu"))
    limit = made["model.int8.tflite"]
    assert made["model.onnx"] > limit  # over the budget, yet the reference every artifact is verified against
    _, manifest = bundled(tmp_path, with_budget("coral-edgetpu", limit))
    assert [a.path for a in manifest.artifacts] == ["model.onnx", "model.int8.tflite"]
    assert manifest.not_shipped == ()
