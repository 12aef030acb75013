"""What the firmware computed, held against the bundle's artifact at the tolerance the build verified it with.

The checksum of ``make check`` is exact: it matches only when the host computes the C's own float32
arithmetic (a model written to be reproduced in numpy, as in tests/test_mcu.py). A plain-C model of
an ONNX or TFLite artifact agrees with it within the manifest's tolerance, not bit for bit: sums in
another order, newlib's ``expf`` against the engine's. :func:`compare_outputs` is that parity check,
by the rule a device's self-test uses (:func:`edgeml_runtime.samples.compare`: labels equal but in a
near tie, probabilities within the absolute tolerance, values within ``rtol`` of the output's scale).

Example (after :func:`edgeml.firmware.emulate.run`)::

    found = compare_outputs("dist/sensors-1", got.outputs, got.labels)   # the bundle's sample rows
    assert found.passed, str(found)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeml.errors import ExportError
from edgeml.firmware.project import bundle_rows, float_artifact
from edgeml_runtime.bundle import open_bundle, read_manifest
from edgeml_runtime.samples import Comparison, Outputs, compare, threshold_of


def compare_outputs(bundle, outputs: np.ndarray, labels: np.ndarray | None = None, *, artifact: str | None = None,
                    records: Sequence[Mapping] | None = None) -> Comparison:
    """The device's ``outputs`` (``(rows, k)``) and ``labels`` (class indices) against what ``artifact``
    computes on the same rows (``records``, or the bundle's sample rows: those of the project written
    by :func:`edgeml.firmware.project.write_bundle_rows` with the same arguments)."""
    with open_bundle(bundle) as folder:
        manifest = read_manifest(folder)
        artifact = float_artifact(manifest, artifact)
        _, want, want_labels = bundle_rows(manifest, folder, artifact, records)
    tolerances = {v.artifact: v.tolerance for v in manifest.verification}
    if artifact not in tolerances:
        raise ExportError(f"the manifest's verification records no tolerance for {artifact}; rebuild the bundle")
    got = np.asarray(outputs, np.float32).reshape(len(outputs), -1)
    if got.shape != want.shape:
        raise ExportError(f"the firmware gave outputs of shape {got.shape} where {artifact} gives {want.shape} on "
                          "these rows: was the project written for these rows and this model?")
    if want_labels is None:
        expected, fresh = Outputs(values=want[:, 0]), Outputs(values=got[:, 0])
    else:
        if labels is None or len(labels) != len(got):
            raise ExportError(f"{artifact} is a classifier: pass the firmware's labels, one per row")
        classes = manifest.classes
        expected = Outputs(labels=tuple(classes[i] for i in want_labels), probabilities=want)
        fresh = Outputs(labels=tuple(classes[int(i)] for i in labels), probabilities=got)
    return compare(expected, fresh, tolerances[artifact], manifest.classes, artifact=f"the firmware ({artifact})",
                   threshold=threshold_of(manifest))


__all__ = ["compare_outputs"]
