"""The same data, seed and --max-trials give the same bundle, byte for byte, whatever the process and --out.

Each pair of builds runs in two processes with different PYTHONHASHSEED
values and different output folders (:mod:`twin_builds`). In the manifest only
the build time, the search's seconds and the trials' elapsed times may differ.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile

import pytest

from edgeml.bundle import place as bundles
from edgeml.export.ort import canonical_ort

pytest_plugins = ["twin_builds"]

pytestmark = pytest.mark.slow


def _comparable(manifest: dict) -> dict:
    """The manifest without what may differ between two identical builds."""
    out = json.loads(json.dumps(manifest))
    out.pop("created")
    out["search"].pop("seconds")
    for trial in out["search"]["trial_log"]:
        trial.pop("elapsed")
    return out


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
def test_two_builds_give_the_same_files(twins, target):
    a, b = twins[target].bundles
    assert a != b and a.name == b.name
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b)
    expected = {"rpi4": {"model.onnx", "model.ort", "model.required_operators.config", "model.tflite"},
                "cortex-m7": {"model.tflite"}}[target] | {"report.html", "report.json"}
    assert expected <= set(files_a), f"the {target} build no longer makes {expected - set(files_a)}"
    different = [name for name in files_a if name != "manifest.json" and files_a[name] != files_b[name]]
    assert different == []
    manifest_a, manifest_b = (json.loads(files[bundles.MANIFEST]) for files in (files_a, files_b))
    assert _comparable(manifest_a) == _comparable(manifest_b)
    assert "samples" in manifest_a and files_a["samples.json"] == files_b["samples.json"]
    assert files_a["report.html"] == files_b["report.html"] and files_a["report.json"] == files_b["report.json"]
    assert manifest_a["report"] == manifest_b["report"]  # listed with the same hashes


@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
def test_two_builds_give_the_same_archive(twins, target, tmp_path):
    """Packed with the first build's manifest, the second build's folder gives the first build's .tar.gz exactly."""
    (a, b), (archive_a, _) = twins[target].bundles, twins[target].archives
    stage = tmp_path / "stage"
    shutil.copytree(b, stage)
    shutil.copy(a / bundles.MANIFEST, stage / bundles.MANIFEST)
    repacked = bundles.finish(stage, tmp_path / a.name)
    assert repacked.read_bytes() == archive_a.read_bytes()


def test_archive_has_no_time_owner_or_order_of_its_own(twins):
    archive = twins["rpi4"].archives[0]
    head = archive.read_bytes()[:10]
    assert head[3] & 0x08 == 0, "the gzip header names a file"
    assert head[4:8] == b"\0\0\0\0", "the gzip header carries a time"
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "demo-1" and names == sorted(names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert {m.mode for m in members if m.isfile()} == {0o644}
    with gzip.open(archive) as f:
        assert f.read(1)  # a valid stream


def test_firmware_sources_are_the_same(twins):
    fa, fb = twins["cortex-m7"].firmware
    assert _files(fa) == _files(fb)
    assert set(_files(fa)) == {"edgeml_model.c", "edgeml_model.h"}


def test_ort_layout_is_canonical(twins):
    """The rewritten .ort is a fixed point, loads and runs in onnxruntime, and names no temporary path."""
    import onnxruntime as ort

    bundle = twins["rpi4"].bundles[0]
    data = (bundle / "model.ort").read_bytes()
    assert canonical_ort(data) == data
    options = ort.SessionOptions()
    options.add_session_config_entry("session.load_model_format", "ORT")
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()]
    config = (bundle / "model.required_operators.config").read_text()
    assert "/tmp" not in config and "edgeml-ort-" not in config
    assert any(line.startswith("ai.onnx.ml;") for line in config.splitlines())
