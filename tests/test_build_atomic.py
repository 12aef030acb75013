"""Builds that are killed, raced or misnamed leave the old bundle or the new one, never half of one the runtime
scores (issue 10, "Builds"): the output is locked, staged, synced and swapped atomically, and names are checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BIN, run_env

from edgeml.bundle import locked, recover, staging_dir
from edgeml.bundle.place import finish, write_archive
from edgeml.cli import main as edgeml_main
from edgeml_runtime import Model
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the build ended ({proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def _agree(folder: Path) -> str:
    """The identity of the bundle in ``folder``, after checking that the .tar.gz beside it is the same bundle."""
    archive = folder.parent / f"{folder.name}.tar.gz"
    identity = read_manifest(folder).identity
    assert read_manifest(archive).identity == identity, f"{folder} and {archive.name} disagree"
    return identity


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old")))


def test_killed_or_raced_during_verification(demo_bundle, tmp_path):
    """A build frozen mid-verification holds the output: a second build to it is refused naming the first one's
    pid. Killed there (kill -9), it leaves a staging folder the runtime refuses, and the bundle it was replacing
    (--force) intact, beside its own archive."""
    out = tmp_path / "demo-1"
    shutil.copytree(demo_bundle, out)
    shutil.copy(demo_bundle.parent / "demo-1.tar.gz", tmp_path / "demo-1.tar.gz")
    before = _agree(out)
    build = [str(BIN / "edgeml"), "build", "--target", "rpi4", "--max-trials", "3", "--seed", "5", "-q",
             "--out", str(out)]
    first = subprocess.Popen([*build, "--force"], env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stage = tmp_path / ".demo-1.partial"
    try:
        _wait_for(stage / "manifest.json", first)  # the first draft: artifacts are being verified
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run([*build, "--force"], env=run_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"another build is writing {out} (pid {first.pid})" in second.stderr
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert (stage / "model.onnx").is_file()  # an unverified model sits there
    with pytest.raises(BundleError, match=r"\.demo-1\.partial is the staging folder of an edgeml build"):
        Model.load(stage)
    renamed = shutil.copytree(stage, tmp_path / "renamed")
    (renamed / ".manifest.json.partial").unlink(missing_ok=True)
    with pytest.raises(BundleError, match="manifest.json is a draft: it lacks samples"):
        Model.load(renamed)
    score = subprocess.run([str(BIN / "edgeml-runtime"), "score", str(stage), "--input", "-"], input="",
                           env=run_env(), capture_output=True, text=True, timeout=120)
    assert score.returncode == 2 and "staging folder" in score.stderr and "Traceback" not in score.stderr
    assert _agree(out) == before and Model.load(out).manifest.name == "demo"  # the old bundle, whole
    with locked(out):  # what the next build does first: clear what the killed one left
        assert staging_dir(out, force=True) == stage and list(stage.iterdir()) == []


def test_a_bundle_name_is_a_name_not_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(edgeml_main, ["build", "--name", "../../../x", "--max-trials", "1"])
    assert result.exit_code == 2 and "--name '../../../x' is not a bundle name" in result.output
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent.parent / "x-1").exists()


# --- the swap, and what a kill at each step of it leaves --------------------------------------------------


@pytest.fixture
def old_and_new(demo_bundle, tmp_path) -> tuple[Path, Path, str, str]:
    """``out`` holding the demo bundle with its archive, and a staging folder holding another (version 2)."""
    out = tmp_path / "demo-1"
    shutil.copytree(demo_bundle, out)
    shutil.copy(demo_bundle.parent / "demo-1.tar.gz", tmp_path / "demo-1.tar.gz")
    stage = shutil.copytree(demo_bundle, tmp_path / ".demo-1.partial")
    manifest = json.loads((stage / "manifest.json").read_text())
    manifest["version"] = "2"
    (stage / "manifest.json").write_text(json.dumps(manifest))
    return out, stage, read_manifest(out).identity, read_manifest(stage, draft=True).identity


def test_force_replaces_in_one_step(old_and_new):
    out, stage, old, new = old_and_new
    finish(stage, out)
    assert _agree(out) == new and _leftovers(out.parent) == []


def _kill_points(out: Path, stage: Path):
    """The states a kill -9 can leave at each step of :func:`finish` (both ways of swapping), made on disk."""
    parent, archive = out.parent, out.parent / f"{out.name}.tar.gz"
    packing = parent / f".{out.name}.tar.gz.partial"
    write_archive(stage, packing, out.name)
    yield "archive packed, nothing moved"
    archive.unlink()
    yield "old archive removed"
    old = parent / f".{out.name}.old"
    out.rename(old)
    yield "old folder moved aside (no exchange)"
    stage.rename(out)
    yield "new folder in, old not yet deleted"
    shutil.rmtree(old)
    yield "old deleted, new archive not yet in"


@pytest.mark.parametrize("step", range(5))
def test_a_kill_at_any_step_of_the_swap_leaves_one_whole_bundle(old_and_new, step):
    out, stage, old, new = old_and_new
    points = _kill_points(out, stage)
    for _ in range(step + 1):
        where = next(points)
    recover(out)  # the next build to this --out, under its lock
    assert _agree(out) in (old, new), where
    assert _agree(out) == (new if step >= 3 else old), where
    assert _leftovers(out.parent) == [], where
    assert Model.load(out).manifest.name == "demo"


def test_a_recovered_archive_is_the_one_the_build_wrote(demo_bundle, tmp_path):
    """Repacked from the folder after a kill, the archive is byte for byte the build's (it is reproducible)."""
    out = shutil.copytree(demo_bundle, tmp_path / "demo-1")
    recover(out)
    assert (tmp_path / "demo-1.tar.gz").read_bytes() == (demo_bundle.parent / "demo-1.tar.gz").read_bytes()


def test_a_held_lock_names_its_holder(tmp_path):
    out = tmp_path / "demo-1"
    script = ("import sys, time\nfrom pathlib import Path\nfrom edgeml.bundle import locked\n"
              "with locked(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(out)], env=run_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BundleError, match=rf"another build is writing {out} \(pid {holder.pid}\)"):
            with locked(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with locked(out):  # released by the kernel when its holder died, however it died
        pass
