"""Microcontroller forms side by side: edgeml's plain C and TFLite Micro forms against m2cgen and emlearn.

For each case a scikit-learn model is fitted once (random forests of 30
trees of depth 8 and of 4 trees of depth 6 on ai4i2020, a 30-tree forest
regressor on CCPP, an MLP), bundled for ``cortex-m7`` by the build's own
stages (:func:`edgeml.build.write_bundle`), and then written by each tool:

* **edgeml C**: ``edgeml firmware --form c`` from the bundle alone (its
  preprocessing included: the row is the raw one);
* **edgeml TFLM**: the bundle's ``.tflite`` for TensorFlow Lite Micro; its
  flash is the model file only (the TFLM runtime and kernels, 42-58 KB measured
  for a forest in issue #21, are not linked here) and its RAM the arena the
  manifest records (the smallest at which ``AllocateTensors`` succeeds);
  outputs from the host TFLM interpreter;
* **m2cgen** (double arithmetic) and **emlearn** (float features, and its
  default int16 features), on the preprocessed matrix the model was fitted on
  (:mod:`mcu_peers`).

Every C form is linked into the same example firmware (:mod:`edgeml.firmware`)
with ``arm-none-eabi-gcc -mcpu=cortex-m7 ... -Os`` and run in QEMU's
``mps2-an500`` on the same test rows. Flash is the linked firmware's minus that
of the same firmware around a model that writes zeros; RAM is static RAM plus
the painted stack's high-water mark, minus the same null firmware's. Flips are
rows whose label (argmax) differs from scikit-learn's; "max diff" is the
largest difference of a probability or value from scikit-learn's.

    make bench-deps && .venv/bin/python bench/bench_mcu.py [--rows 2000] [--results DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATASETS, RESULTS_DIR, model_config, publish, trained_directly

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = {
    "ai4i2020": ("ai4i2020.csv", "Machine failure", ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")),
    "ccpp": ("ccpp.csv", "PE", ()),
}


def cases(seed: int) -> list[tuple[str, str, object]]:
    """(name, data set, unfitted estimator) of every case."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    from edgeml.models.estimators import StandardizedMLPClassifier

    return [("forest 30x8 (ai4i)", "ai4i2020", RandomForestClassifier(30, max_depth=8, random_state=seed)),
            ("forest 4x6 (ai4i)", "ai4i2020", RandomForestClassifier(4, max_depth=6, random_state=seed)),
            ("forest regressor 30x8 (ccpp)", "ccpp", RandomForestRegressor(30, max_depth=8, random_state=seed)),
            ("mlp 16x8 (ai4i)", "ai4i2020",
             StandardizedMLPClassifier(hidden_layer_sizes=(16, 8), max_iter=200, random_state=seed))]


def fitted_bundle(name: str, data_name: str, model, work: Path, seed: int):
    """The model fitted on its table's train split and bundled for cortex-m7: (bundle, pipeline, data)."""
    from edgeml.build import host_pipeline, write_bundle
    from edgeml.bundle import provenance_record
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare
    from edgeml.targets.profiles import load_target

    file, label, drop = DATA[data_name]
    table = read_table(DATASETS / file)
    data = prepare(table.frame, label, drop=drop, seed=seed)
    started = time.monotonic()
    model.fit(data.X["train"], data.y["train"])
    pipeline = host_pipeline(data, model)
    profile = load_target("cortex-m7")
    out = work / name.split()[0].replace("/", "") / f"{abs(hash(name)) % 10**6}"
    learner = type(model).__name__
    write_bundle(out, pipeline, data, profile, name="bench", version="1",
                 search=trained_directly(learner, model, data, profile, time.monotonic() - started),
                 provenance=provenance_record(table, data, seed, learner, model, model_config(model)),
                 seed=seed, force=True)
    return out, pipeline, data


def on_m7(folder: Path, rows: np.ndarray, features=None):
    """Build ``folder`` (a model's C) into the example firmware with ``rows``, run it in QEMU: (Build, Run)."""
    from edgeml.firmware import emulate, project

    project.write_project(folder, "cortex-m7")
    project.write_rows(folder, rows, np.zeros((len(rows), 1), np.float32), None, features)
    done = emulate.build(folder)
    return done, emulate.run(done.elf, "mps2-an500", check=False)


def measured(label: str, form, null, truth: np.ndarray, classifier: bool) -> dict:
    """One row of the table from a form's (Build, Run) and the null firmware's."""
    done, ran = form
    base_build, base_run = null
    got = np.asarray(ran.outputs, np.float64).reshape(len(truth), -1)
    return {"form": label, "flash": done.flash_bytes - base_build.flash_bytes,
            "ram": (done.ram_bytes + ran.stack_bytes) - (base_build.ram_bytes + base_run.stack_bytes),
            **_agreement(got, truth, classifier), "ok": ran.exit_code == 0}


def _agreement(got: np.ndarray, truth: np.ndarray, classifier: bool) -> dict:
    flips = int((got.argmax(1) != truth.argmax(1)).sum()) if classifier else 0
    return {"flips": flips, "max_diff": float(np.max(np.abs(got - truth)))}


def one_case(name: str, data_name: str, model, work: Path, n_rows: int, seed: int) -> list[dict]:
    import mcu_peers

    from edgeml.export.c import write_c_firmware
    from edgeml.firmware.project import float_rows
    from edgeml_runtime.bundle import read_manifest

    bundle, pipeline, data = fitted_bundle(name, data_name, model, work, seed)
    manifest = read_manifest(bundle)
    records = data.split.test.iloc[:n_rows].to_dict("records")  # the raw rows, as a device receives them
    features = data.features["test"].iloc[:n_rows]  # the same rows as the host pipeline takes them
    classifier = data.task == "classification"
    truth = pipeline.predict_proba(features) if classifier else pipeline.predict(features).reshape(-1, 1)
    k = truth.shape[1]
    raw = float_rows(manifest.schema, records)
    fitted = data.X["test"][:n_rows]  # what the estimator itself takes: after every step before it (a scaler)
    for _, step in pipeline.steps[1:-1]:
        fitted = step.transform(fitted)
    fitted = np.asarray(fitted, np.float32)
    estimator = pipeline.steps[-1][1]
    n = fitted.shape[1]
    case = work / f"case-{abs(hash(name)) % 10**6}"
    mcu_peers.null_model(case / "null-raw", raw.shape[1], k, classifier)
    mcu_peers.null_model(case / "null-fitted", n, k, classifier)
    null_raw, null_fitted = on_m7(case / "null-raw", raw), on_m7(case / "null-fitted", fitted)
    write_c_firmware(bundle, case / "edgeml")
    rows = [measured("edgeml C", on_m7(case / "edgeml", raw, manifest.schema.features), null_raw, truth,
                     classifier)]
    rows.append(_tflm_row(bundle, manifest, records, truth, classifier))
    peers = [("m2cgen", lambda out: mcu_peers.m2cgen_model(out, estimator, n, k, classifier)),
             ("emlearn (float)", lambda out: mcu_peers.emlearn_model(out, estimator, n, k, classifier, "float")),
             ("emlearn (int16, its default)",
              lambda out: mcu_peers.emlearn_model(out, estimator, n, k, classifier, "int16_t"))]
    for label, write in peers:
        out = case / re.sub(r"[^a-z0-9]+", "-", label)  # make takes no parentheses in a path
        try:
            write(out)
            rows.append(measured(label, on_m7(out, fitted), null_fitted, truth, classifier))
        except Exception as exc:  # a tool that does not take this model: say so in the table
            rows.append({"form": label, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"})
    return rows


def _tflm_row(bundle: Path, manifest, records: list[dict], truth: np.ndarray, classifier: bool) -> dict:
    """The TFLM form: the .tflite file's bytes, the recorded arena, and the host TFLM's outputs on the rows."""
    from edgeml.export.tflite import micro

    tflite = [a for a in manifest.artifacts if a.format == "tflite"]
    if not tflite:
        return {"form": "edgeml TFLM", "error": "no TFLite artifact shipped for cortex-m7"}
    art = next((a for a in tflite if a.precision == "fp32"), tflite[0])
    tflm = (art.transform.to_dict() if art.transform else {}).get("tflite_micro") or {}
    names = manifest.schema.names
    scored = micro.score_rows(bundle, art.path, {n: [r.get(n) for r in records] for n in names})
    got = scored.probabilities if classifier else scored.values
    return {"form": f"edgeml TFLM ({art.precision}; runtime not linked)", "flash": art.bytes,
            "ram": int(tflm.get("arena_bytes", 0)), "ok": True,
            **_agreement(np.asarray(got, np.float64).reshape(len(truth), -1), truth, classifier)}


def table(done: list[tuple[str, list[dict]]], n_rows: int, seconds: float) -> str:
    lines = ["# Microcontroller forms: flash, RAM and exactness on a Cortex-M7", "",
             f"`python bench/bench_mcu.py --rows {n_rows}`: the same fitted models in each form, linked with "
             "arm-none-eabi-gcc (-mcpu=cortex-m7 -mthumb -mfpu=fpv5-d16 -mfloat-abi=hard -Os, --gc-sections) "
             f"and run in QEMU's mps2-an500 on {n_rows} test rows ({seconds:.0f} s in all). Flash and RAM are the "
             "model's own: the firmware's minus that of the same firmware around a null model. Flips: labels "
             "(argmax) unlike scikit-learn's; max diff: of a probability or value.", ""]
    for name, rows in done:
        edgeml = next((r for r in rows if r["form"] == "edgeml C" and "flash" in r), None)
        lines += [f"## {name}", "", "| form | flash (B) | RAM (B) | label flips | max diff | vs edgeml C flash |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['form']} | — | — | — | — | {r['error']} |")
                continue
            ratio = f"{r['flash'] / edgeml['flash']:.2f}x" if edgeml and edgeml["flash"] else "—"
            diff = f"{r['max_diff']:.2e}" if "max_diff" in r else "—"
            flips = r.get("flips", "—")
            lines.append(f"| {r['form']} | {r['flash']:,} | {r['ram']:,} | {flips} | {diff} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="test rows each form scores (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where mcu.md goes")
    args = parser.parse_args(argv)
    if not (DATASETS / "ai4i2020.csv").is_file():
        print(f"bench_mcu needs the shared data sets in {DATASETS}", file=sys.stderr)
        return 2
    started, done = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="bench-mcu-") as work:
        for name, data_name, model in cases(args.seed):
            print(f"-- {name}", file=sys.stderr)
            done.append((name, one_case(name, data_name, model, Path(work), args.rows, args.seed)))
    publish("mcu", table(done, args.rows, time.monotonic() - started), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
