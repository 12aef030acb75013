"""Bundle slots (issue 18): real bundle archives unpacked, switched, committed and rolled back; leftovers
recovered; and a process killed with SIGKILL at every file-system step of a whole update history leaves slots.json
naming only whole slots that the bundle loader reads, and a current bundle that is the old one or the new one."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edgeml_runtime.bundle import open_bundle
from edgeml_runtime.errors import UpdateError, UpdateRefused
from edgeml_runtime.update.slots import Slots


def renumbered_archive(bundle: Path, folder: Path, version: str) -> Path:
    """A ``.tar.gz`` of a copy of ``bundle`` whose manifest says ``version``: the same artifacts, another identity."""
    copy = shutil.copytree(bundle, folder / f"demo-{version}")
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": version}, indent=2))
    archive = folder / f"demo-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(copy, arcname=copy.name)
    return archive


def loaded_identity(path) -> str:
    """The identity of the bundle at ``path`` once the loader checked its manifest and every artifact's hash."""
    with open_bundle(path) as bundle:
        manifest = bundle.manifest()
        for artifact in manifest.artifacts:
            bundle.artifact(artifact)
        return manifest.identity


@pytest.fixture(scope="module")
def archives(demo_bundle, tmp_path_factory) -> dict[int, tuple[Path, str]]:
    """Release version → (bundle archive, its identity): the demo bundle's own archive, and three renumbered."""
    folder = tmp_path_factory.mktemp("archives")
    found = {1: demo_bundle.parent / "demo-1.tar.gz"}
    found.update({v: renumbered_archive(demo_bundle, folder, str(v)) for v in (2, 3, 4)})
    return {v: (path, loaded_identity(path)) for v, path in found.items()}


def test_a_switch_commit_rollback_cycle(archives, tmp_path):
    slots = Slots(tmp_path)
    (a1, id1), (a2, id2), (a3, id3), (a4, id4) = (archives[v] for v in (1, 2, 3, 4))
    slot1 = slots.unpack(a1, 1)
    assert slot1 == tmp_path / "slots" / "1" and loaded_identity(slot1) == id1 and slots.current() is None
    slots.switch(1, id1, rollout=3)
    assert slots.current() == slot1 and slots.state["active"] is None
    assert slots.state["pending"] == {"version": 1, "identity": id1, "path": str(slot1), "step": "switched",
                                      "crashes": 0, "rollout": 3}
    assert (slots.crashed(), slots.crashed()) == (1, 2)
    assert slots.commit() == slot1
    assert slots.state == {"active": {"version": 1, "path": str(slot1), "identity": id1}, "previous": None,
                           "pending": None}
    slots.unpack(a2, 2)
    slots.switch(2, id2)
    slot2 = slots.commit()
    assert (slots.state["active"]["version"], slots.state["previous"]["version"]) == (2, 1)
    slots.unpack(a3, 3)
    slots.switch(3, id3)
    assert slots.current() == tmp_path / "slots" / "3"
    assert slots.rollback() == slot2 == slots.current()
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == ["1", "2"]  # the rolled back slot is gone
    slots.unpack(a4, 4)
    slots.switch(4, id4)
    slots.commit()
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == ["2", "4"]  # beyond active + previous: gone
    assert Slots(tmp_path).state == slots.state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slots", "slots.json"]


def test_a_rollback_of_the_first_update_goes_back_to_the_command_line_bundle(archives, tmp_path):
    slots = Slots(tmp_path)
    slots.unpack(archives[1][0], 1)
    slots.switch(1, archives[1][1])
    assert slots.rollback() is None and slots.current() is None
    assert list((tmp_path / "slots").iterdir()) == []


def test_an_archive_that_is_not_a_bundle_is_a_bad_archive_and_leaves_nothing(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    with tarfile.open(junk, "w:gz") as tar:
        info = tarfile.TarInfo("junk/notes.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"notes"))
    slots = Slots(tmp_path / "update")
    with pytest.raises(UpdateRefused, match=r"the archive is not a whole bundle: .*junk.tar.gz is not a bundle: it "
                                            r"holds no manifest.json") as bad:
        slots.unpack(junk, 5)
    assert bad.value.reason == "bad_archive"
    assert list((tmp_path / "update" / "slots").iterdir()) == []


def test_a_slot_not_holding_the_release_s_bundle_is_refused_at_switch(archives, tmp_path):
    slots = Slots(tmp_path)
    slots.unpack(archives[2][0], 7)
    with pytest.raises(UpdateRefused, match=rf"slot .*7 holds bundle {archives[2][1][:12]}…, not "
                                            rf"{archives[1][1][:12]}… as the release says") as bad:
        slots.switch(7, archives[1][1])
    assert bad.value.reason == "bad_archive" and slots.state["pending"] is None
    with pytest.raises(UpdateError, match=r"there is no slot .*slots/8: unpack the release first"):
        slots.switch(8, archives[1][1])


def test_misuse_is_an_update_error(archives, tmp_path):
    slots = Slots(tmp_path)
    with pytest.raises(UpdateError, match=r"no update is pending in .*slots.json: nothing to commit"):
        slots.commit()
    with pytest.raises(UpdateError, match=r"nothing to roll back"):
        slots.rollback()
    slots.unpack(archives[1][0], 1)
    slots.switch(1, archives[1][1])
    with pytest.raises(UpdateError, match=r"slot .*slots/1 is in use \(slots.json names it\)"):
        slots.unpack(archives[1][0], 1)
    (tmp_path / "slots.json").write_text("[]")
    with pytest.raises(UpdateError, match=r"slots.json is not the update slots' state; delete it"):
        Slots(tmp_path)


def test_recover_deletes_leftovers_and_forgets_missing_slots(archives, tmp_path):
    slots = Slots(tmp_path)
    for v in (1, 2):
        slots.unpack(archives[v][0], v)
        slots.switch(v, archives[v][1])
        slots.commit()
    (tmp_path / "slots" / "3.partial").mkdir()
    (tmp_path / "slots" / "3.partial" / "manifest.json").write_text("{")
    shutil.copytree(tmp_path / "slots" / "1", tmp_path / "slots" / "9")  # whole, but slots.json does not name it
    (tmp_path / ".slots.json.x1y2.tmp").write_text("{")
    (tmp_path / "bundle.tgz.partial").write_bytes(b"a download to resume")
    assert Slots(tmp_path).recover() == [".slots.json.x1y2.tmp", "slots/3.partial", "slots/9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tgz.partial", "slots", "slots.json"]
    shutil.rmtree(tmp_path / "slots" / "2")  # the active slot deleted by hand: the previous one takes its place
    slots = Slots(tmp_path)
    assert slots.recover() == []
    assert (slots.state["active"]["version"], slots.state["previous"]) == (1, None)
    assert slots.current() == tmp_path / "slots" / "1" and Slots(tmp_path).state == slots.state


# --- kill -9 at every step --------------------------------------------------------------------------------------

#: The update history the killed process goes through (release versions as in ``archives``).
HISTORY = [("unpack", 1), ("switch", 1), ("commit",), ("unpack", 2), ("switch", 2), ("commit",), ("unpack", 3),
           ("switch", 3), ("crashed",), ("rollback",), ("unpack", 4), ("switch", 4), ("commit",)]
#: Its file-system steps: moves (os.replace, shutil.rmtree: every change of what is named or present) and fsyncs
#: (one per file of the demo bundle's 8 in each of the 4 unpacks, the rest for folders and slots.json).
MOVES, FSYNCS = 15, 60
#: Kill points: before every move and before every fsync (mid-unpack, mid-write of slots.json).
POINTS = [f"move:{k}" for k in range(MOVES)] + [f"fsync:{k}" for k in range(FSYNCS)]

#: Runs HISTORY in a fork per kill point (one interpreter start for all, 16 forks at a time), the fork killing itself
#: with SIGKILL before its ``point`` (``move:3``: the fourth move); logs the current bundle before and after each step
#: of HISTORY.
RUNNER = r"""
import json, os, shutil, signal, sys, traceback
from pathlib import Path
from edgeml_runtime.update.slots import Slots

work, archives, history, points = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), \
    json.loads(sys.argv[4])

def run(folder, point, log):
    kill_kind, kill_at = point.split(":")
    count = {"move": 0, "fsync": 0}
    def counted(real, kind):
        def call(*args, **kwargs):
            if kind == kill_kind and count[kind] == int(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)
            count[kind] += 1
            return real(*args, **kwargs)
        return call
    os.fsync = counted(os.fsync, "fsync")
    os.replace, shutil.rmtree = counted(os.replace, "move"), counted(shutil.rmtree, "move")
    slots = Slots(folder)
    def current():
        return slots.current() and slots.current().relative_to(folder)
    for i, (name, *version) in enumerate(history):
        log.write(f"before {i} {current()}\n"); log.flush()
        if name == "unpack":
            slots.unpack(archives[str(version[0])][0], version[0])
        elif name == "switch":
            slots.switch(version[0], archives[str(version[0])][1])
        else:
            getattr(slots, name)()
        log.write(f"after {i} {current()}\n"); log.flush()
    log.write(f"steps {count['move']} {count['fsync']}\n"); log.flush()

codes, running = {}, {}
def reap():
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
for point in points:  # forks in parallel: most of the time is spent waiting for fsync
    while len(running) >= 16:
        reap()
    (work / point).mkdir()
    pid = os.fork()
    if pid == 0:
        code = 0
        with open(work / point / "log", "w") as log:
            try:
                run(work / point / "update", point, log)
            except BaseException:
                traceback.print_exc(file=log)
                code = 3
        os._exit(code)
    running[pid] = point
while running:
    reap()
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def killed(archives, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The work folder of the runner and each kill point's exit code (``never:0``: the run never killed)."""
    work = tmp_path_factory.mktemp("killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    paths = {str(v): [str(a), identity] for v, (a, identity) in archives.items()}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(work), json.dumps(paths), json.dumps(HISTORY),
                           json.dumps(["never:0", *POINTS])], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return work, json.loads(done.stdout)


def _log(work: Path, point: str) -> list[list[str]]:
    return [line.split(" ", 2) for line in (work / point / "log").read_text().splitlines()]


def test_the_history_unkilled_makes_exactly_the_steps_the_kills_are_tried_at(killed):
    work, codes = killed
    log = _log(work, "never:0")
    assert codes["never:0"] == 0 and log[-1] == ["steps", str(MOVES), str(FSYNCS)], log[-3:]
    assert sum(1 for line in log if line[0] == "after") == len(HISTORY)


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_any_step_leaves_only_whole_slots_and_the_old_or_new_bundle(killed, archives, point):
    work, codes = killed
    assert codes[point] == -9, (work / point / "log").read_text()[-2000:]
    _, index, before = next(line for line in reversed(_log(work, point)) if line[0] == "before")
    after = {line[1]: line[2] for line in _log(work, "never:0") if line[0] == "after"}[index]
    folder = work / point / "update"
    slots = Slots(folder)
    slots.recover()
    for slot in filter(None, slots.state.values()):
        assert loaded_identity(slot["path"]) == slot["identity"] == archives[slot["version"]][1]
    assert sorted(p.name for p in (folder / "slots").iterdir()) == sorted(slots.named())
    assert sorted(p.name for p in folder.iterdir()) in (["slots"], ["slots", "slots.json"])
    current = slots.current()
    assert str(current and current.relative_to(folder)) in (before, after), f"killed in {HISTORY[int(index)]}"
    assert current is None or (current / "manifest.json").is_file()
