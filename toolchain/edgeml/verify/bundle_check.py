"""``edgeml verify BUNDLE``: re-check a bundle as a CI job would, from nothing but the bundle.

Four kinds of check, each a :class:`Check` with a status:

* ``file``: every file the manifest lists (artifacts, their side files such
  as an ``.ort`` file's operators config, ``samples.json``, the build report)
  has the size and SHA-256 recorded there, read as the runtime reads it
  (inside the bundle, never through a link); a file in the bundle that the
  manifest does not mention fails; a missing report is skipped (device
  packages leave it out);
* ``schema``: the manifest, as the file holds it, against the JSON Schema the
  runtime ships (``edgeml_runtime/schemas/manifest.schema.json``);
* ``manifest``: fails when the runtime itself refuses the manifest
  (:func:`edgeml_runtime.bundle.read_manifest`), so that nothing can be
  scored; there is no such check when it reads;
* ``parity``: every artifact scores the stored sample rows through
  ``edgeml_runtime`` as it did at build time, compared by the runtime's rule
  (:func:`edgeml_runtime.samples.compare`, the one a device's self-test and
  the build's parity check apply): labels equal (a near-tie excepted),
  probabilities or values within the tolerance the manifest's
  ``verification`` records for that artifact (absolute for probabilities,
  ``rtol`` of the recorded output scale for values). A reduced-precision
  artifact is compared with its own outputs.

The report also carries the bundle's identity (:attr:`Manifest.identity
<edgeml_runtime.manifest.Manifest.identity>`), the one devices report. A
bundle that cannot be read at all is a :class:`~edgeml.errors.BundleError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import jsonschema

from edgeml.errors import BundleError, EdgeMLError
from edgeml_runtime.bundle import MANIFEST, Bundle, Manifest, open_bundle
from edgeml_runtime.features import few
from edgeml_runtime.samples import check_artifact, read_samples

#: The manifest's JSON Schema, as the runtime package ships it.
SCHEMA_NAME = "manifest.schema.json"
STATUSES = ("pass", "fail", "skip")
#: Problems shown per failed check before "and N more".
_SHOWN = 3


@dataclass(frozen=True)
class Check:
    kind: str  #: "file", "schema", "manifest" or "parity"
    subject: str  #: the file or artifact checked
    status: str  #: one of STATUSES
    detail: str

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check status {self.status!r} is not one of {STATUSES}")


@dataclass(frozen=True)
class BundleReport:
    bundle: str
    checks: tuple[Check, ...]
    identity: str | None = None  #: the manifest's sha256 (Manifest.identity); None when the runtime refuses it

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "identity": self.identity, "passed": self.passed, "counts": self.counts(),
                "checks": [asdict(c) for c in self.checks]}


def manifest_schema() -> dict:
    """The manifest's JSON Schema shipped inside ``edgeml_runtime`` (package data)."""
    return json.loads((resources.files("edgeml_runtime") / "schemas" / SCHEMA_NAME).read_text(encoding="utf-8"))


def check_bundle(bundle, schema: dict | None = None) -> BundleReport:
    """Every check on ``bundle`` (a folder or ``.tar.gz``); ``schema`` overrides :func:`manifest_schema`."""
    with open_bundle(bundle) as folder:
        raw = folder.manifest_json()
        checks = [*_file_checks(folder, raw), _schema_check(raw, manifest_schema() if schema is None else schema)]
        try:
            manifest = Manifest.from_dict(raw, f"{folder.source}/{MANIFEST}")
        except BundleError as exc:  # the runtime would refuse it: nothing can be scored
            return BundleReport(str(bundle), (*checks, Check("manifest", MANIFEST, "fail", str(exc))))
        checks.extend(_parity_checks(folder, manifest))
    return BundleReport(str(bundle), tuple(checks), manifest.identity)


def render(report: BundleReport) -> str:
    """One line per check, then a summary line."""
    width = max((len(c.subject) for c in report.checks), default=0)
    mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}
    lines = [f"identity  {report.identity or '(none: the manifest cannot be read)'}"]
    lines += [f"{mark[c.status]}  {c.kind:<6}  {c.subject:<{width}}  {c.detail}" for c in report.checks]
    n = report.counts()
    verdict = "passed" if report.passed else "FAILED"
    lines.append(f"{report.bundle}: {verdict} ({len(report.checks)} checks: {n['pass']} passed, {n['fail']} failed, "
                 f"{n['skip']} skipped)")
    return "\n".join(lines)


# --- files ------------------------------------------------------------------------------------------


def _file_checks(folder: Bundle, manifest: dict) -> list[Check]:
    """Every file the manifest lists, by size and hash; then every file in the bundle it does not list.

    The manifest is read as plain JSON here (the ``schema`` check judges its
    layout), so a malformed entry is passed over rather than trusted.
    """
    listed = []
    for a in _objects(manifest.get("artifacts")):
        listed.append(a)
        listed += _objects(list(a["files"].values()) if isinstance(a.get("files"), dict) else [])
    listed += _objects([manifest.get("samples")])
    report = _objects(list(manifest["report"].values()) if isinstance(manifest.get("report"), dict) else [])
    present = set(folder.names())
    checks = [_file_check(folder, entry) for entry in listed]
    checks += [_file_check(folder, entry) if entry.get("path") in present else
               Check("file", str(entry.get("path")), "skip", "not in this copy: the build report is for people, and "
                                                             "device packages leave it out")
               for entry in report]
    listed += report
    known = {MANIFEST, *(str(e.get("path")) for e in listed)}
    for path in folder.names():
        if path not in known:
            checks.append(Check("file", path, "fail", "not listed in the manifest: it was added after the build; "
                                                      "remove it or rebuild the bundle"))
    return checks


def _objects(items) -> list[dict]:
    return [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []


def _file_check(folder: Bundle, entry: dict) -> Check:
    path, size, digest = entry.get("path"), entry.get("bytes"), entry.get("sha256")
    if not (isinstance(path, str) and isinstance(size, int) and isinstance(digest, str)):
        return Check("file", str(path), "fail", "the manifest does not give this file's path, bytes and sha256 "
                                                "(see the schema check)")
    try:
        folder.read(path, size=size, sha256=digest)
    except BundleError as exc:
        return Check("file", path, "fail", str(exc))
    return Check("file", path, "pass", f"{size:,} bytes, sha256 {digest[:12]}…")


# --- schema -----------------------------------------------------------------------------------------


def _schema_check(manifest: dict, schema: dict) -> Check:
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return Check("schema", MANIFEST, "pass", f"valid against {SCHEMA_NAME}")
    problems = [f"at {'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors]
    return Check("schema", MANIFEST, "fail", _few(problems) + f" (checked against {SCHEMA_NAME})")


def _few(problems: list[str]) -> str:
    return few(problems, _SHOWN, quote=False, sep="; ")


# --- parity -----------------------------------------------------------------------------------------


def _parity_checks(folder: Path, manifest: Manifest) -> list[Check]:
    try:
        samples = read_samples(folder, manifest)
    except BundleError as exc:
        return [Check("parity", manifest.samples.path if manifest.samples else MANIFEST, "fail", str(exc))]
    return [_parity_check(folder, manifest, samples, a.path) for a in manifest.artifacts]


def _parity_check(folder: Path, manifest: Manifest, samples, artifact: str) -> Check:
    try:
        found = check_artifact(folder, manifest, samples, artifact)
    except EdgeMLError as exc:
        return Check("parity", artifact, "fail", str(exc))
    n = f"{found.rows} {samples.source} sample rows"
    if not found.passed:
        return Check("parity", artifact, "fail", f"{len(found.differences)} difference(s) on {n}: "
                                                 + _few([str(d) for d in found.differences]))
    what = "labels equal, probabilities" if manifest.classes else "values"
    return Check("parity", artifact, "pass", f"{n}: {what} within {found.tolerance} "
                                             f"(largest difference {found.largest:.2g})")


__all__ = ["SCHEMA_NAME", "BundleReport", "Check", "check_bundle", "manifest_schema", "render"]
