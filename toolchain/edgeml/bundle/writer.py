"""Write a bundle: artifacts plus ``manifest.json`` in a staging folder (:class:`BundleWriter`).

The folder is assembled under a temporary name beside its destination and
moved into place (:mod:`edgeml.bundle.place`) only when the build has
verified it, so a failed build never leaves a half-written bundle where a
device or a rollout could pick it up. Every file the writer puts in the
folder is listed in the manifest with its size and SHA-256, side files
included; an ONNX artifact must hold all its weights (external data would be
a file the manifest cannot vouch for, and the runtime loads models from
bytes, which cannot reach one).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from edgeml.errors import BundleError, ConfigError
from edgeml_runtime.bundle import MANIFEST
from edgeml_runtime.manifest import (
    METRICS,
    Artifact,
    Decision,
    Dropped,
    Manifest,
    MetricDrop,
    Metrics,
    NotShipped,
    Provenance,
    Reference,
    Report,
    Samples,
    Search,
    Target,
    Verification,
)
from edgeml_runtime.schema import InputSchema


class BundleWriter:
    """Collects what the stages hand it and alone writes ``manifest.json`` into the staging folder.

    The stages give it plain records — artifact files and their
    descriptions, verification and not-shipped records, the validation
    metrics, drift reference, search record and provenance — and it holds them
    as the typed sections of :mod:`edgeml_runtime.manifest`, each validated
    when handed over. Verifying an artifact through ``edgeml_runtime`` needs a
    manifest on disk: :meth:`draft` writes one listing the artifacts shipped so
    far and the candidate; :meth:`write` writes the whole one, once, at the end.
    Every manifest is written to a temporary file and renamed, so a reader
    never sees half of one.
    """

    def __init__(self, stage: Path, *, name: str, version: str, target: dict, task: str, label: str,
                 schema: InputSchema, dropped: list[dict], classes: tuple = (), created: str | None = None):
        self.stage = stage
        self._header = {"name": name, "version": version, "created": created or now_utc(),
                        "target": Target.from_dict(_plain(target), _at("target")), "task": task, "label": label,
                        "schema": schema, "classes": tuple(classes),
                        "dropped": tuple(Dropped.from_dict(_plain(d), _at(f"dropped[{i}]"))
                                         for i, d in enumerate(dropped))}
        self._artifacts: list[Artifact] = []
        self._verification: list[Verification] = []
        self._not_shipped: list[NotShipped] = []
        self._records: dict[str, object] = {}

    # --- records -----------------------------------------------------------------------------

    def record(self, what: str, value: dict) -> None:
        """Hand over one of the sections made once: ``valid_metrics``, ``reference``, ``search``, ``provenance``,
        ``samples``, ``decision``, ``report``."""
        if what not in _RECORDS:
            raise ValueError(f"a bundle has no record {what!r}; it takes {', '.join(_RECORDS)}")
        if what in self._records:
            raise ValueError(f"the {what} record was already handed to the bundle writer")
        self._records[what] = _RECORDS[what](_plain(value), _at(what))

    def add_artifact(self, path: str, data: bytes, *, format: str, precision: str, engine: str, outputs: dict,
                     inputs: list[str], opset: dict | None = None, transform: dict | None = None,
                     files: dict[str, bytes] | None = None) -> Artifact:
        """Write an artifact's file, and its side files as ``<stem>.<suffix>``, into the folder; its description.

        The artifact is a candidate: :meth:`draft` to verify it, then
        :meth:`ship` or :meth:`reject` it.
        """
        if format == "onnx":
            _refuse_external_data(path, data)
        written = {}
        for suffix, blob in (files or {}).items():
            name = self._put(f"{Path(path).stem}.{suffix}", blob)
            written[suffix] = {"path": name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        self._put(path, data)
        entry = {"path": path, "format": format, "precision": precision, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), "engine": engine, "outputs": outputs, "inputs": inputs,
                 "opset": opset, "files": written if files is not None else None, "transform": transform}
        return Artifact.from_dict(_plain({k: v for k, v in entry.items() if v is not None}), _at(path))

    def draft(self, candidate: Artifact) -> Manifest:
        """Write the manifest so far, with ``candidate`` last, for the runtime to load it; returns it."""
        manifest = self._manifest((*self._artifacts, candidate))
        self._write(manifest)
        return manifest

    def ship(self, candidate: Artifact, *, test_metrics: dict, verification: dict, metric_drop: dict | None = None):
        """Keep a verified artifact, with its test metrics (and metric drop), and its verification record."""
        drop = None if metric_drop is None else MetricDrop.from_dict(_plain(metric_drop), _at("metric_drop"))
        self._artifacts.append(replace(candidate, test_metrics=_plain(test_metrics), metric_drop=drop))
        self._add_verification(verification)

    def reject(self, candidate: Artifact, not_shipped: dict, verification: dict | None = None) -> None:
        """Take a candidate's files back out of the folder, and record why it is not shipped."""
        for path in (candidate.path, *(f.path for f in (candidate.files or {}).values())):
            (self.stage / path).unlink()
        if verification is not None:
            self._add_verification(verification)
        self.not_shipped(not_shipped)

    def not_shipped(self, record: dict) -> None:
        """Record an artifact the target asked for that is not in the bundle (``format``, ``precision``…)."""
        self._not_shipped.append(NotShipped.from_dict(_plain(record), _at(f"not_shipped[{len(self._not_shipped)}]")))

    def add_report(self, files: dict[str, bytes]) -> None:
        """Write the build report's files (``html``: report.html, ``data``: report.json) and list them, hashed."""
        self.record("report", {what: {"path": self._put(name, blob), "bytes": len(blob),
                                      "sha256": hashlib.sha256(blob).hexdigest()}
                               for what, (name, blob) in files.items()})

    @property
    def name(self) -> str:
        return self._header["name"]

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        return tuple(self._artifacts)

    @property
    def not_shipped_records(self) -> tuple[NotShipped, ...]:
        return tuple(self._not_shipped)

    # --- writing ------------------------------------------------------------------------------

    def write(self) -> Manifest:
        """Write the whole ``manifest.json``; refuses a bundle with an artifact that was never verified."""
        unverified = [a.path for a in self._artifacts if a.test_metrics is None]
        if not self._artifacts or unverified:
            raise BundleError(f"no manifest written: {', '.join(unverified) or 'no artifact'} was never verified "
                              "through edgeml_runtime")
        manifest = self._manifest(tuple(self._artifacts))
        self._write(manifest)
        return manifest

    def _manifest(self, artifacts: tuple[Artifact, ...]) -> Manifest:
        missing = [k for k in ("valid_metrics", "reference", "search", "provenance") if k not in self._records]
        if missing:
            raise BundleError(f"the bundle writer lacks the {', '.join(missing)} record(s): hand them over with "
                              "record() before verifying artifacts")
        first = self._artifacts[0].test_metrics if self._artifacts else None
        metrics = Metrics(test=first, valid=self._records["valid_metrics"])
        return Manifest(**self._header, artifacts=artifacts, metrics=metrics, verification=tuple(self._verification),
                        not_shipped=tuple(self._not_shipped), reference=self._records["reference"],
                        search=self._records["search"], provenance=self._records["provenance"],
                        samples=self._records.get("samples"), decision=self._records.get("decision"),
                        report=self._records.get("report"))

    def _write(self, manifest: Manifest) -> None:
        text = json.dumps(manifest.to_dict(), indent=2) + "\n"
        tmp = self.stage / f".{MANIFEST}.partial"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.stage / MANIFEST)

    def _put(self, name: str, data: bytes) -> str:
        if Path(name).name != name or name in (MANIFEST, f".{MANIFEST}.partial"):
            raise ValueError(f"an artifact file name must be a plain name in the bundle folder, not {name!r}")
        if (self.stage / name).exists():
            raise ValueError(f"{name} is already in the bundle folder {self.stage}")
        (self.stage / name).write_bytes(data)
        return name

    def _add_verification(self, record: dict) -> None:
        at = _at(f"verification[{len(self._verification)}]")
        self._verification.append(Verification.from_dict(_plain(record), at))


#: The sections handed over once, and how each is read.
_RECORDS = {
    "valid_metrics": lambda d, at: METRICS.read(d, at),
    "reference": Reference.from_dict,
    "search": Search.from_dict,
    "provenance": Provenance.from_dict,
    "samples": Samples.from_dict,
    "decision": Decision.from_dict,
    "report": Report.from_dict,
}


def _at(key: str) -> str:
    return f"{MANIFEST} (being written): {key}"


def _plain(value):
    """``value`` as plain JSON data: numpy scalars and arrays become Python numbers and lists."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(v):
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"cannot write {type(v).__name__} to a manifest")


def _refuse_external_data(path: str, data: bytes) -> None:
    """An ONNX model whose tensors live in other files is not one a bundle can carry (module docstring)."""
    import onnx

    model = onnx.load_from_string(data)  # from bytes: external data is never loaded, only described
    external = [t.name or "(unnamed)" for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise BundleError(f"{path} keeps tensor(s) {', '.join(external[:3])} in external data files; a bundle holds "
                          "every weight inside its artifact. Export the model without external data")


def _tensors(graph):
    """Every tensor of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    yield from (s.values for s in graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def now_utc() -> str:
    """The manifest's ``created``: now, or ``$SOURCE_DATE_EPOCH`` when set (reproducible builds' convention).

    >>> import os; os.environ["SOURCE_DATE_EPOCH"] = "1700000000"; now_utc()
    '2023-11-14T22:13:20Z'
    >>> del os.environ["SOURCE_DATE_EPOCH"]
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        when = datetime.now(UTC)
    else:
        try:
            when = datetime.fromtimestamp(int(epoch), UTC)
        except (ValueError, OverflowError, OSError):
            raise ConfigError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since 1970; "
                              "set it to one (e.g. $(git log -1 --format=%ct)) or unset it") from None
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")
