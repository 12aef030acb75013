"""``edgeml verify BUNDLE``: re-check a bundle as a CI job would, from nothing but the bundle.

Three kinds of check, each a :class:`Check` with a status:

* ``file``: every file the manifest lists (artifacts, ``samples.json``) has
  the size and SHA-256 recorded there; a file in the folder that the
  manifest does not mention fails, one it mentions without a hash (an
  ``.ort`` file's operators config) is reported as not checked;
* ``schema``: the manifest against the runtime's JSON Schema
  (``edgeml_runtime/schemas/manifest.schema.json``), skipped with a note
  when the installed runtime has none;
* ``parity``: every artifact scores the stored sample rows through
  ``edgeml_runtime`` as it did at build time: labels equal (a near-tie
  excepted, as in the build's parity check), probabilities or values within
  the tolerance the manifest's ``verification`` records for that artifact.
  A reduced-precision artifact is compared with its own outputs.

A bundle that cannot be read at all is a :class:`~edgeml.errors.BundleError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import edgeml_runtime
from edgeml.errors import BundleError, EdgeMLError, VerificationError
from edgeml.verify.samples import Samples, read_samples, score_rows
from edgeml_runtime.bundle import MANIFEST, Manifest, open_bundle, read_manifest, sha256_file

#: Where the runtime package keeps the manifest's JSON Schema.
SCHEMA = Path(edgeml_runtime.__file__).parent / "schemas" / "manifest.schema.json"
STATUSES = ("pass", "fail", "skip")
#: Problems shown per failed check before "and N more".
_SHOWN = 3


@dataclass(frozen=True)
class Check:
    kind: str  #: "file", "schema" or "parity"
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

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "passed": self.passed, "counts": self.counts(),
                "checks": [asdict(c) for c in self.checks]}


def check_bundle(bundle, schema: Path | None = None) -> BundleReport:
    """Every check on ``bundle`` (a folder or ``.tar.gz``); ``schema`` overrides :data:`SCHEMA`."""
    with open_bundle(bundle) as folder:
        raw = _raw_manifest(folder)
        checks = [*_file_checks(folder, raw), _schema_check(raw, schema or SCHEMA)]
        try:
            manifest = read_manifest(folder)
        except BundleError as exc:  # the runtime would refuse it: nothing can be scored
            checks.append(Check("manifest", MANIFEST, "fail", str(exc)))
        else:
            checks.extend(_parity_checks(folder, manifest))
    return BundleReport(str(bundle), tuple(checks))


def _raw_manifest(folder: Path) -> dict:
    """``manifest.json`` as plain JSON, for the checks that must see what the file holds, unknown keys included."""
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{folder} is not a bundle: it has no {MANIFEST}. Pass the folder that `edgeml build` "
                          "wrote, or its .tar.gz") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read as JSON ({exc}); the bundle is damaged, copy it again") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path} does not hold a JSON object; rebuild the bundle")
    return raw


def render(report: BundleReport) -> str:
    """One line per check, then a summary line."""
    width = max((len(c.subject) for c in report.checks), default=0)
    mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}
    lines = [f"{mark[c.status]}  {c.kind:<6}  {c.subject:<{width}}  {c.detail}" for c in report.checks]
    n = report.counts()
    verdict = "passed" if report.passed else "FAILED"
    lines.append(f"{report.bundle}: {verdict} ({len(report.checks)} checks: {n['pass']} passed, {n['fail']} failed, "
                 f"{n['skip']} skipped)")
    return "\n".join(lines)


# --- files ------------------------------------------------------------------------------------------


def _file_checks(folder: Path, manifest: dict) -> list[Check]:
    hashed = [(a["path"], a.get("bytes"), a.get("sha256")) for a in manifest.get("artifacts", [])]
    if isinstance(manifest.get("samples"), dict):
        s = manifest["samples"]
        hashed.append((s.get("path"), s.get("bytes"), s.get("sha256")))
    checks = [_file_check(folder, path, size, digest) for path, size, digest in hashed]
    unhashed = [p for a in manifest.get("artifacts", []) for p in (a.get("files") or {}).values()]
    for path in unhashed:
        present = (folder / path).is_file()
        checks.append(Check("file", path, "skip" if present else "fail",
                            "present; the manifest records no size or hash for it" if present
                            else "listed under an artifact's files but missing; copy the whole bundle again"))
    known = {MANIFEST, *(p for p, _, _ in hashed), *unhashed}
    for path in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()):
        if path not in known:
            checks.append(Check("file", path, "fail", "not listed in the manifest: it was added after the build; "
                                                      "remove it or rebuild the bundle"))
    return checks


def _file_check(folder: Path, path: str, size, digest) -> Check:
    file = folder / path
    if not file.is_file():
        return Check("file", path, "fail", "listed in the manifest but missing; copy the whole bundle again")
    found_size, found = file.stat().st_size, sha256_file(file)
    if found_size != size or found != digest:
        return Check("file", path, "fail",
                     f"does not match the manifest: expected {size} bytes, sha256 {str(digest)[:12]}…; found "
                     f"{found_size} bytes, sha256 {found[:12]}…. It was changed after the build: copy it again")
    return Check("file", path, "pass", f"{size:,} bytes, sha256 {found[:12]}…")


# --- schema -----------------------------------------------------------------------------------------


def _schema_check(manifest: dict, schema: Path) -> Check:
    if not schema.is_file():
        return Check("schema", MANIFEST, "skip",
                     f"note: this edgeml_runtime has no manifest schema ({schema.name} not found); not checked")
    import jsonschema

    doc = json.loads(schema.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(doc)(doc)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return Check("schema", MANIFEST, "pass", f"valid against {schema.name}")
    problems = [f"at {'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors]
    return Check("schema", MANIFEST, "fail", _few(problems) + f" (checked against {schema.name})")


def _few(problems: list[str]) -> str:
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return "; ".join(problems[:_SHOWN]) + more


# --- parity -----------------------------------------------------------------------------------------


def _parity_checks(folder: Path, manifest: Manifest) -> list[Check]:
    section = manifest.samples
    if section is None:
        return [Check("parity", MANIFEST, "fail", "the manifest has no 'samples' section, so there are no rows to "
                                                  "score; rebuild the bundle with this edgeml")]
    try:
        samples = read_samples(folder, section.to_dict())
    except VerificationError as exc:
        return [Check("parity", section.path, "fail", str(exc))]
    tolerances = {v.artifact: v.tolerance for v in manifest.verification}
    return [_parity_check(folder, manifest, samples, a.path, tolerances.get(a.path)) for a in manifest.artifacts]


def _parity_check(folder: Path, manifest: Manifest, samples: Samples, artifact: str, tolerance) -> Check:
    expected = samples.expected.get(artifact)
    if expected is None:
        return Check("parity", artifact, "fail", f"samples.json holds no expected outputs for {artifact}; "
                                                 "rebuild the bundle")
    if not isinstance(tolerance, (int, float)):
        return Check("parity", artifact, "fail", f"the manifest's 'verification' records no tolerance for {artifact}")
    try:
        got = score_rows(folder, artifact, samples.rows, samples.columns)
    except EdgeMLError as exc:
        return Check("parity", artifact, "fail", f"could not score the sample rows: {exc}")
    try:
        problems, largest = compare_outputs(expected, got, float(tolerance), manifest.classes)
    except (KeyError, TypeError, ValueError) as exc:
        return Check("parity", artifact, "fail", f"samples.json's expected outputs are malformed ({exc!r})")
    n = len(samples.rows)
    if problems:
        return Check("parity", artifact, "fail", f"{len(problems)} difference(s) on {n} {samples.source} sample rows: "
                                                 + _few(problems))
    what = "labels equal, probabilities" if manifest.classes else "values"
    return Check("parity", artifact, "pass", f"{n} {samples.source} sample rows: {what} within {tolerance:g} "
                                             f"(largest difference {largest:.2g})")


def compare_outputs(expected: dict, got: dict, tolerance: float, classes: tuple) -> tuple[list[str], float]:
    """What differs between stored and fresh outputs (one message per row and output), and the largest difference.

    >>> compare_outputs({"values": [1.0, 2.0]}, {"values": [1.0, 2.5]}, 1e-4, ())
    (['rows[1] value: 2.5 where samples.json expects 2 (allowed relative difference 0.0001)'], 0.25)
    """
    if "values" in expected:
        want, have = np.asarray(expected["values"], np.float64), np.asarray(got["values"], np.float64)
        _same_length(want, have)
        rel = np.abs(have - want) / np.maximum(1.0, np.abs(want))
        problems = [f"rows[{i}] value: {have[i]:.6g} where samples.json expects {want[i]:.6g} "
                    f"(allowed relative difference {tolerance:g})" for i in np.flatnonzero(rel > tolerance)]
        return problems, float(rel.max(initial=0.0))
    want, have = np.asarray(expected["probabilities"], np.float64), np.asarray(got["probabilities"], np.float64)
    _same_length(want, have)
    if want.shape != have.shape:
        raise ValueError(f"expected probabilities of shape {want.shape}, the artifact gives {have.shape}")
    top2 = np.sort(want, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) <= tolerance if want.shape[1] > 1 else np.zeros(len(want), bool)
    problems = [f"rows[{i}] label: {got['labels'][i]!r} where samples.json expects {expected['labels'][i]!r}"
                for i in range(len(want)) if got["labels"][i] != expected["labels"][i] and not tie[i]]
    diff = np.abs(have - want)
    for i, j in zip(*np.nonzero(diff > tolerance), strict=True):
        name = f" (class {classes[j]!r})" if j < len(classes) else ""
        problems.append(f"rows[{i}] probabilities[{j}]{name}: {have[i, j]:.6g} where samples.json expects "
                        f"{want[i, j]:.6g} (allowed difference {tolerance:g})")
    return problems, float(diff.max(initial=0.0))


def _same_length(want: np.ndarray, have: np.ndarray) -> None:
    if len(want) != len(have):
        raise ValueError(f"samples.json holds outputs for {len(want)} rows, the artifact scored {len(have)}")


__all__ = ["SCHEMA", "BundleReport", "Check", "check_bundle", "compare_outputs", "render"]
