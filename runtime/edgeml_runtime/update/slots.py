"""Bundle slots: where a device keeps the bundle it runs, the one before, and the one it is testing.

Layout of the update folder::

    slots.json               {"active": slot | null, "previous": slot | null, "pending": slot + test | null}
    slots/<version>/         a whole bundle, unpacked (version: the release version)
    slots/<version>.partial/ one being unpacked: never taken for whole, deleted by recover()

A slot is ``{"version", "path", "identity"}``; ``pending`` adds ``step``
(``"switched"``), ``crashes`` and ``rollout``. The cycle of an update:
:meth:`Slots.unpack` → :meth:`Slots.switch` (the new bundle runs, on test)
→ :meth:`Slots.commit` (it becomes the active one) or :meth:`Slots.rollback`.

Crash safety comes from the order of the steps. A slot is unpacked into
``<version>.partial``, every file and the folder fsynced, then renamed
whole; only then can ``slots.json`` name it. ``slots.json`` is replaced
atomically (:func:`~edgeml_runtime.update.trust.write_json`), and a slot is
deleted only after ``slots.json`` stopped naming it. So a kill -9 between any
two steps leaves ``slots.json`` naming whole slots only, and some leftovers
(a partial slot, an unnamed one, a temporary file) that :meth:`Slots.recover`
deletes at the next start.

Example (no update yet: the device runs the bundle given on its command line):

>>> import tempfile
>>> slots = Slots(tempfile.mkdtemp())
>>> slots.recover(), slots.current(), slots.state["pending"]
([], None, None)
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from pathlib import Path

from ..bundle import open_bundle
from ..errors import BundleError, UpdateError, UpdateRefused
from ..statefile import _fsync_folder
from .trust import read_json, write_json

__all__ = ["SLOTS_FILE", "Slots"]

SLOTS_FILE = "slots.json"
_EMPTY = {"active": None, "previous": None, "pending": None}
_LEFTOVER = re.compile(r"\.slots\.json\..+\.tmp")  # write_json's temporary files


class Slots:
    """The slots of the update folder ``folder``; :attr:`state` is ``slots.json`` as last read or written."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.root = self.folder / "slots"
        self.root.mkdir(parents=True, exist_ok=True)
        self.file = self.folder / SLOTS_FILE
        state = read_json(self.file, "the update slots")
        if state is not None and not (isinstance(state, dict) and set(_EMPTY) <= set(state)):
            raise UpdateError(f"{self.file} is not the update slots' state; delete it (the device then runs the "
                              "bundle given on its command line)")
        self.state = state or dict(_EMPTY)

    # --- reading ---------------------------------------------------------------------------------------------

    def current(self) -> Path | None:
        """The bundle to run: the pending slot if one is switched, else the active one, else None (the CLI's)."""
        slot = self.state["pending"] or self.state["active"]
        return Path(slot["path"]) if slot else None

    def named(self) -> set[str]:
        """The folder names (versions) of the slots ``slots.json`` names."""
        return {str(s["version"]) for s in self.state.values() if s}

    # --- the steps -------------------------------------------------------------------------------------------

    def unpack(self, archive_path: str | os.PathLike, version: int) -> Path:
        """Unpack the bundle archive into ``slots/<version>/``, checked by the bundle loader; the slot's path.

        Refused ``bad_archive`` if the archive is not a whole bundle (nothing is
        left then). A slot of that version that ``slots.json`` names is in use:
        UpdateError.
        """
        final, partial = self.root / str(version), self.root / f"{version}.partial"
        if str(version) in self.named():
            raise UpdateError(f"slot {final} is in use (slots.json names it); a release version is installed once")
        for leftover in (partial, final):
            _remove(leftover)
        try:
            _check_archive(archive_path)
            partial.mkdir()
            _extract(Path(archive_path), partial)
            _check_bundle(partial)
        except BaseException:
            _remove(partial)
            raise
        os.replace(partial, final)
        _fsync_folder(self.root)
        return final

    def switch(self, version: int, identity: str, rollout=None) -> Path:
        """Run slot ``version`` on test: ``pending`` = switched (``active`` stays the committed one); its path.

        Refused ``bad_archive`` if the slot's bundle is not ``identity``.
        """
        path = self.root / str(version)
        found = _check_bundle(path) if path.is_dir() else None
        if found is None:
            raise UpdateError(f"there is no slot {path}: unpack the release first")
        if found != identity:
            raise UpdateRefused("bad_archive", f"slot {path} holds bundle {found[:12]}…, not {identity[:12]}… as the "
                                               "release says; the release was made from another bundle, make it again")
        pending = {"version": version, "identity": identity, "path": str(path), "step": "switched", "crashes": 0,
                   "rollout": rollout}
        self._save({**self.state, "pending": pending})
        return path

    def commit(self) -> Path:
        """The pending slot becomes the active one, the active one the previous; older slots are deleted."""
        pending = self._pending("commit")
        slot = {k: pending[k] for k in ("version", "path", "identity")}
        self._save({"active": slot, "previous": self.state["active"], "pending": None})
        self._delete_unnamed()
        return Path(slot["path"])

    def rollback(self) -> Path | None:
        """Drop the pending slot (and delete it); the bundle to run now: the active one (None: the CLI's)."""
        self._pending("roll back")
        self._save({**self.state, "pending": None})
        self._delete_unnamed()
        return self.current()

    def mark(self, step: str) -> None:
        """Note how the pending slot stands: ``switched`` (running on test), ``installed`` (by hand, its first start
        to come) or ``stopped`` (the process stopped cleanly on it): the last two count no crash at the next start."""
        if step not in ("switched", "installed", "stopped"):
            raise ValueError(f"a pending slot is switched, installed or stopped, not {step!r}")
        pending = self._pending(f"mark {step}")
        self._save({**self.state, "pending": {**pending, "step": step}})

    def crashed(self) -> int:
        """Count one crash of the pending bundle (call at start when one is pending); the count so far."""
        pending = self._pending("count a crash of")
        crashes = int(pending["crashes"]) + 1
        self._save({**self.state, "pending": {**pending, "crashes": crashes}})
        return crashes

    def recover(self) -> list[str]:
        """At start: forget slots that are not whole, delete leftovers; the names deleted, sorted.

        Leftovers are partial slots, slots ``slots.json`` does not name and
        temporary files of an interrupted write of ``slots.json`` (a download's
        ``.partial`` file is not one: it is resumed). A named slot whose folder is
        gone (deleted by hand) is dropped from ``slots.json``: the previous
        slot takes the place of a missing active one.
        """
        state = {k: s if s and _whole(Path(s["path"])) else None for k, s in self.state.items()}
        if state["active"] is None and state["previous"] is not None:
            state["active"], state["previous"] = state["previous"], None
        if state != self.state:
            self._save(state)
        removed = [p.name for p in self.folder.iterdir() if _LEFTOVER.fullmatch(p.name)]
        for name in removed:
            _remove(self.folder / name)
        return sorted(removed + self._delete_unnamed())

    # --- helpers ---------------------------------------------------------------------------------------------

    def _pending(self, what: str) -> dict:
        if self.state["pending"] is None:
            raise UpdateError(f"no update is pending in {self.file}: nothing to {what}")
        return self.state["pending"]

    def _save(self, state: dict) -> None:
        write_json(self.file, state)
        self.state = state

    def _delete_unnamed(self) -> list[str]:
        keep = self.named()
        gone = sorted(p.name for p in self.root.iterdir() if p.name not in keep)
        for name in gone:
            _remove(self.root / name)
        if gone:
            _fsync_folder(self.root)
        return [f"slots/{name}" for name in gone]


def _whole(path: Path) -> bool:
    return path.is_dir() and not path.name.endswith(".partial") and (path / "manifest.json").is_file()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_archive(archive: str | os.PathLike) -> None:
    """Read the archive with the bundle loader (bounded, regular files one folder deep, the manifest typed)."""
    try:
        with open_bundle(archive) as bundle:
            bundle.manifest()
    except BundleError as exc:
        raise UpdateRefused("bad_archive", f"the archive is not a whole bundle: {exc}") from None


def _extract(archive: Path, into: Path) -> None:
    """Write the archive's regular files (already checked by :func:`_check_archive`) into ``into``, fsynced."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            fd = os.open(into / member.name.rsplit("/", 1)[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    _fsync_folder(into)


def _check_bundle(folder: Path) -> str:
    """The identity of the bundle in ``folder`` after the loader checked its manifest and every file's hash."""
    try:
        with open_bundle(folder) as bundle:
            manifest = bundle.manifest()
            for artifact in manifest.artifacts:
                bundle.artifact(artifact)
            if manifest.samples is not None:
                s = manifest.samples
                bundle.read(s.path, size=s.bytes, sha256=s.sha256)
    except BundleError as exc:
        raise UpdateRefused("bad_archive", f"the unpacked bundle is not whole: {exc}") from None
    return manifest.identity
