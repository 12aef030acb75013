"""Bundle loading, confined and bounded: paths stay inside the bundle, every file is listed and hashed, the bytes
hashed are the bytes run, archives are bounded and never unpacked to disk, and a manifest edited so that the model
means something else is refused at load (issue 10, "Bundle loading")."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgeml_runtime import Model
from edgeml_runtime.bundle import Limits, open_bundle, read_manifest
from edgeml_runtime.cli import main as runtime_main
from edgeml_runtime.errors import BundleError, EngineError


def _copy(bundle: Path, tmp_path: Path, name: str = "b") -> Path:
    return Path(shutil.copytree(bundle, tmp_path / name))


def _edit(bundle: Path, change) -> Path:
    m = json.loads((bundle / "manifest.json").read_text())
    change(m)
    (bundle / "manifest.json").write_text(json.dumps(m))
    return bundle


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data


def _bundle_members(bundle: Path, top: str = "b") -> list[tuple[tarfile.TarInfo, bytes]]:
    return [_member(f"{top}/{p.name}", p.read_bytes()) for p in sorted(bundle.iterdir())]


# --- confined: nothing outside the bundle is opened, or described --------------------------------------------


@pytest.mark.parametrize("path", ["../outside/model.onnx", "/etc/passwd", "sub/model.onnx", ".hidden", "manifest.json"])
def test_an_artifact_path_leaving_the_bundle_is_refused_naming_the_key(demo_bundle, tmp_path, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    foreign = outside / "model.onnx"
    foreign.write_bytes(b"secret contents of a file outside the bundle" * 7)
    bundle = _edit(_copy(demo_bundle, tmp_path), lambda m: m["artifacts"][0].__setitem__("path", path))
    with pytest.raises(BundleError, match=r"manifest.json: artifacts\[0\].path is .*, expected a plain file name|"
                                          r"manifest.json: artifacts\[0\].path is 'manifest.json', expected the name"
                                          ) as refused:
        Model.load(bundle)
    text = str(refused.value)
    for secret in (foreign, Path("/etc/passwd")):
        data = secret.read_bytes()
        assert hashlib.sha256(data).hexdigest()[:12] not in text and f"{len(data)} bytes" not in text


def test_a_link_out_of_the_bundle_is_refused_even_to_the_right_bytes(demo_bundle, tmp_path):
    """A symbolic link is never followed, even to a file whose bytes the manifest vouches for."""
    bundle = _copy(demo_bundle, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(bundle / "model.onnx", outside)
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"b/model.onnx is a symbolic link; a bundle holds its files itself"):
        Model.load(bundle, artifact="model.onnx")
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="is a symbolic link") as refused:
        Model.load(bundle, artifact="model.onnx")
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()[:12] not in str(refused.value)


def test_a_mismatch_names_only_what_the_manifest_expected(demo_bundle, tmp_path):
    bundle = _copy(demo_bundle, tmp_path)
    secret = bytes(range(256)) * 48 + b"abc"  # 12,291 bytes: a size that appears nowhere else
    (bundle / "model.onnx").write_bytes(secret)
    with pytest.raises(BundleError, match=r"model.onnx does not match the manifest \(expected [\d,]+ bytes, sha256 "
                                          r"[0-9a-f]{12}…\)") as refused:
        Model.load(bundle, artifact="model.onnx")
    assert hashlib.sha256(secret).hexdigest()[:12] not in str(refused.value)
    assert "12291" not in str(refused.value).replace(",", "")


def test_a_fifo_or_folder_in_place_of_a_file_is_refused_without_blocking(demo_bundle, tmp_path):
    bundle = _copy(demo_bundle, tmp_path)
    (bundle / "model.onnx").unlink()
    os.mkfifo(bundle / "model.onnx")
    with pytest.raises(BundleError, match="model.onnx is not a regular file"):
        Model.load(bundle, artifact="model.onnx")


@pytest.mark.parametrize("member", [
    _member("b/../../outside.onnx", b"x"),
    _member("/abs/model.onnx", b"x"),
    _member("b/link.onnx", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    _member("b/hard.onnx", type=tarfile.LNKTYPE, linkname="b/model.onnx"),
    _member("b/dev", type=tarfile.CHRTYPE),
    _member("b/sub/model.onnx", b"x"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device", "subfolder"])
def test_an_archive_member_leaving_the_bundle_is_refused(demo_bundle, tmp_path, member):
    archive = _archive(tmp_path / "b.tgz", [*_bundle_members(demo_bundle), member])
    with pytest.raises(BundleError, match=r"b.tgz: member .* (is a link|is not a regular file|is not a plain "
                                          r"file of the bundle)"):
        Model.load(archive)


# --- complete: every file listed and hashed; the bytes hashed are the bytes run --------------------------------


def test_an_unlisted_file_is_refused_at_load(demo_bundle, tmp_path):
    """Such as the external data an ONNX model could name: nothing the manifest does not vouch for is in a bundle."""
    bundle = _copy(demo_bundle, tmp_path)
    (bundle / "model.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(BundleError, match=r"b/model.onnx.data is in the bundle but not listed in its manifest: it "
                                          "was added after the build"):
        Model.load(bundle)
    archive = _archive(tmp_path / "b.tgz", _bundle_members(bundle))
    with pytest.raises(BundleError, match=r"b.tgz: model.onnx.data is in the bundle but not listed"):
        Model.load(archive)


def test_the_ort_side_file_is_listed_with_its_hash_and_checked(demo_bundle, tmp_path):
    manifest = read_manifest(demo_bundle)
    ort = next(a for a in manifest.artifacts if a.format == "ort")
    side = ort.files["required_operators.config"]
    data = (demo_bundle / side.path).read_bytes()
    assert (side.bytes, side.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    bundle = _copy(demo_bundle, tmp_path)
    (bundle / side.path).write_bytes(data.replace(b"ai.onnx", b"ai.evil"))
    with pytest.raises(BundleError, match=r"model.required_operators.config \(a side file of model.ort\) does not "
                                          "match the manifest"):
        Model.load(bundle, artifact="model.ort")


def test_an_onnx_model_with_external_data_cannot_reach_it(tmp_path):
    """The runtime hands onnxruntime bytes, which resolve no external file; the host refuses to bundle one."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgeml.bundle.writer import _refuse_external_data
    from edgeml.errors import BundleError as HostBundleError
    from edgeml_runtime.engines import OnnxEngine

    weight = numpy_helper.from_array(np.ones((1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    data = (tmp_path / "m.onnx").read_bytes()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where weights.bin is: still not read
    try:
        with pytest.raises(EngineError, match="onnxruntime cannot load m.onnx"):
            OnnxEngine(data, name="m.onnx")
    finally:
        os.chdir(cwd)
    with pytest.raises(HostBundleError, match="m.onnx keeps tensor\\(s\\) w in external data files"):
        _refuse_external_data("m.onnx", data)


#: While a test watches: (the file's name, what to write into it on its second opening, the openings seen).
_WATCH: list = []


def _swap_on_second_open(event, args):
    """An audit hook: replace the watched file's contents just before it is opened a second time, between a
    check that reads it and a load that reads it again, exactly where a swap went unnoticed (5 in 40 tries)."""
    if event != "open" or not _WATCH or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path, replacement, opened = _WATCH[0]
    if os.path.basename(os.fsdecode(args[0])) == path.name:  # a name relative to the bundle folder, or a path
        opened.append(args[0])
        if len(opened) == 2:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # inside the hook: os.write raises no audit event
            os.write(fd, replacement)
            os.close(fd)


sys.addaudithook(_swap_on_second_open)


def test_the_bytes_hashed_are_the_bytes_loaded(demo_bundle, tmp_path):
    """Swapping the TFLite file between the check and the load used to run the swapped file; now it is read once
    and the engine gets those bytes (and onnxruntime gets bytes, not a path it would open again)."""
    bundle = _copy(demo_bundle, tmp_path)
    opened: list = []
    _WATCH.append((bundle / "model.tflite", b"TFL3 not the model that was checked" * 100, opened))
    try:
        model = Model.load(bundle, artifact="model.tflite")
    finally:
        _WATCH.clear()
    assert len(opened) == 1, f"model.tflite was opened {len(opened)} times during the load"
    assert model.predict([{}] * 0).labels.shape == (0,) and model.artifact.path == "model.tflite"
    onnx = Model.load(bundle, artifact="model.onnx")
    assert onnx.engine.session._model_path is None and onnx.engine.session._model_bytes


# --- bounded, never unpacked --------------------------------------------------------------------------------


def _bomb(path: Path, claimed: int) -> Path:
    """A small .tar.gz whose one member claims ``claimed`` bytes (its data is never written: a header is enough)."""
    info = tarfile.TarInfo("b/model.onnx")
    info.size = claimed
    with gzip.open(path, "wb") as gz:
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        gz.write(b"\0" * (1 << 20))
    return path


def test_an_archive_that_unpacks_huge_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    archive = _bomb(tmp_path / "bomb.tgz", 2 << 30)
    private = tmp_path / "tmp"  # a temporary folder of this test's own: others' files come and go in /tmp
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    before = set(Path(tempfile.gettempdir()).iterdir())
    with pytest.raises(BundleError, match=r"bomb.tgz unpacks to more than 1,073,741,824 bytes"):
        Model.load(archive)
    assert runtime_main(["info", str(archive)]) == 2
    assert "unpacks to more than" in capsys.readouterr().err
    assert set(Path(tempfile.gettempdir()).iterdir()) == before  # nothing unpacked to disk


def test_archive_limits_on_members_size_and_the_stream(demo_bundle, tmp_path):
    many = _archive(tmp_path / "many.tgz", [_member(f"b/f{i}", b"") for i in range(70)])
    with pytest.raises(BundleError, match="holds more than 64 members"):
        Model.load(many)
    archive = _archive(tmp_path / "b.tgz", _bundle_members(demo_bundle))
    with pytest.raises(BundleError, match="unpacks to more than 10,000 bytes"):
        with open_bundle(archive, limits=Limits(archive_bytes=10_000)):
            pass
    pax = tarfile.TarInfo("b/model.onnx")
    pax.pax_headers = {"comment": "x" * (3 << 20)}  # a header, not a member's data: bounded on the stream
    with tarfile.open(tmp_path / "pax.tgz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(pax, io.BytesIO(b""))
    with pytest.raises(BundleError, match="pax.tgz unpacks to more than 1,048,576 bytes"):
        with open_bundle(tmp_path / "pax.tgz", limits=Limits(archive_bytes=1 << 20, file_bytes=1 << 20)):
            pass


def test_a_truncated_archive_is_a_clean_error(demo_bundle, tmp_path):
    whole = demo_bundle.parent / "demo-1.tar.gz"
    for cut in (10, len(whole.read_bytes()) // 2, len(whole.read_bytes()) - 9):
        truncated = tmp_path / f"cut{cut}.tgz"
        truncated.write_bytes(whole.read_bytes()[:cut])
        with pytest.raises(BundleError, match="is not a readable bundle archive: it is truncated or damaged"):
            Model.load(truncated)
    assert Model.load(whole).manifest.name == "demo"


def test_a_huge_manifest_is_refused_before_it_is_read(demo_bundle, tmp_path):
    bundle = _copy(demo_bundle, tmp_path)
    with open(bundle / "manifest.json", "ab") as f:
        f.truncate(9 << 20)
    with pytest.raises(BundleError, match=r"manifest.json is larger than 8,388,608 bytes, the most a manifest may"):
        Model.load(bundle)


# --- valid JSON of the right types, or an error naming the key ----------------------------------------------


@pytest.mark.parametrize("raw,match", [
    (b'{"format_version": 3, "name": "\xff"}', r"manifest.json is not UTF-8 text \(byte 31\)"),
    (b"[" * 100_000 + b"]" * 100_000, "manifest.json nests too deeply to read"),
    (b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}", "manifest.json nests more than 16 levels deep"),
    (b'{"format_version": 3, "name": "\\ud800"}', r"holds the text '\\ud800', with a lone surrogate"),
    (b'{"format_version": NaN}', r"manifest.json is not valid JSON \(NaN is not a JSON number"),
], ids=["non-utf8", "deep-100000", "deep-500", "lone-surrogate", "nan"])
def test_a_malformed_manifest_is_a_clean_error(demo_bundle, tmp_path, raw, match):
    bundle = _copy(demo_bundle, tmp_path)
    (bundle / "manifest.json").write_bytes(raw)
    with pytest.raises(BundleError, match=match):
        Model.load(bundle)


@pytest.mark.parametrize("change,match", [
    (lambda m: m["artifacts"][0].__setitem__("outputs", {"label": "zzz", "probabilities": "probabilities"}),
     r"artifact model.onnx has no output 'zzz' \(its outputs are 'label', 'probabilities'\)"),
    (lambda m: m["target"].__setitem__("cores", 10 ** 30), r"target.cores is 1000000000000000000000000000000, "
                                                           "expected an integer that fits in 64 bits"),
    (lambda m: m["inputs"][7].__setitem__("missing_rate", "1e400"), r"inputs\[7\].missing_rate is inf, expected "
                                                                    "a finite number"),
    (lambda m: m.__setitem__("name", "../../x"), "name is '../../x', expected a name of letters"),
], ids=["output-name", "huge-int", "infinite", "name"])
def test_a_wrong_value_names_its_key(demo_bundle, tmp_path, change, match):
    bundle = _edit(_copy(demo_bundle, tmp_path), change)
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.replace('"1e400"', "1e400"))  # JSON's 1e400 reads as infinity
    with pytest.raises(BundleError, match=match):
        Model.load(bundle, artifact="model.onnx")


# --- the manifest must fit the model, and mean what it meant --------------------------------------------------


def test_classes_reordered_are_caught_by_the_sample_rows(demo_bundle, tmp_path):
    """Editing only ``classes`` (and the reference that repeats them) to [1, 0] used to invert every label."""
    def invert(m):
        m["classes"] = m["classes"][::-1]
        m["reference"]["output"]["classes"] = m["classes"]
    bundle = _edit(_copy(demo_bundle, tmp_path), invert)
    for artifact in ("model.onnx", "model.tflite"):
        with pytest.raises(BundleError, match=rf"{artifact} does not score the bundle's sample rows as it did at "
                                              r"build time \(.*rows\[\d+\] label: got 1, expected 0"):
            Model.load(bundle, artifact=artifact)
    assert Model.load(bundle, artifact="model.onnx", self_test=False).classes == (1, 0)  # verify reports it instead


def test_more_classes_than_the_model_gives_are_refused(demo_bundle, tmp_path):
    """A third class used to drop probability columns silently; now the engine's output width is checked."""
    def widen(m):
        m["classes"] = [0, 1, 2]
        m["reference"]["output"] |= {"classes": [0, 1, 2], "shares": [0.5, 0.3, 0.2]}
        m.pop("decision", None)  # a binary threshold would be refused first
    bundle = _edit(_copy(demo_bundle, tmp_path), widen)
    for artifact in ("model.onnx", "model.ort", "model.tflite"):
        with pytest.raises(BundleError, match=rf"classes lists 3 labels, but artifact {artifact} gives 2 "
                                              "probabilities"):
            Model.load(bundle, artifact=artifact)


def test_an_input_of_the_wrong_kind_is_refused(demo_bundle, tmp_path):
    def categorical(m):
        column = next(c for c in m["inputs"] if c["name"] == "rpm")
        column |= {"kind": "categorical", "categories": ["fast"], "range": None}
        m["reference"]["columns"]["rpm"] = {"kind": "categorical", "monitored": True, "categories": ["fast"],
                                            "shares": [0.5, 0.5], "missing_rate": 0.0}
    bundle = _edit(_copy(demo_bundle, tmp_path), categorical)
    with pytest.raises(BundleError, match="artifact model.onnx takes 'rpm' as number, but the manifest's inputs "
                                          "give it as text"):
        Model.load(bundle, artifact="model.onnx")


# --- finished bundles only ----------------------------------------------------------------------------------


def test_a_draft_and_a_staging_folder_are_refused(demo_bundle, tmp_path):
    stage = _copy(demo_bundle, tmp_path, ".demo-1.partial")
    with pytest.raises(BundleError, match=r"\.demo-1\.partial is the staging folder of an edgeml build"):
        Model.load(stage)
    draft = _edit(_copy(demo_bundle, tmp_path), lambda m: (m.pop("samples"), m["artifacts"][2].pop("test_metrics")))
    (draft / "samples.json").unlink()
    with pytest.raises(BundleError, match=r"manifest.json is a draft: it lacks samples, artifacts\[2\].test_metrics"):
        Model.load(draft)
    assert Model.load(draft, draft=True).manifest.samples is None  # the build's own verification
