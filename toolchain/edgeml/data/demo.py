"""Built-in demo data: a deterministic, plausible industrial-sensor table.

It lets ``edgeml build --target rpi4`` run offline with no data of its own.
Each row is one reading of one of ~20 machines, every ~10 minutes: air and
process temperature, spindle speed, torque, vibration and tool wear. The
``failure`` label follows the failure modes of milling machines described
for the AI4I 2020 predictive-maintenance data set (tool wear-out, poor heat
dissipation at low speed, power out of band, overstrain by type), made soft
with noise, so it is learnable but not a lookup table.

Example:

>>> frame = demo_frame(rows=500, seed=1)
>>> frame.shape
(500, 10)
>>> list(frame.columns)  # doctest: +NORMALIZE_WHITESPACE
['timestamp', 'machine_id', 'machine_type', 'air_temp_c', 'process_temp_c',
 'rpm', 'torque_nm', 'vibration_mm_s', 'tool_wear_min', 'failure']
>>> demo_frame(rows=500, seed=1).equals(frame)
True
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.data.ingest import Table
from edgeml.errors import ConfigError

DEMO_LABEL = "failure"

#: First reading; rows follow every ~10 minutes.
START = pd.Timestamp("2024-01-01T00:00:00")
N_MACHINES = 20
#: Machine types (low, medium, high quality) and how many of the 20 machines are each.
TYPES = {"L": 10, "M": 6, "H": 4}
#: Tool wear added per reading (minutes of cutting), by type.
WEAR_STEP = {"L": 2, "M": 3, "H": 5}
#: Overstrain limit, tool wear [min] x torque [Nm], by type.
STRAIN_LIMIT = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _tool_wear(machine: np.ndarray, steps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Minutes of wear on each machine's tool, reset when the tool is replaced (at 200-250 min)."""
    wear = np.zeros(len(machine))
    current = rng.integers(0, 200, N_MACHINES).astype(float)
    limit = rng.uniform(200, 250, N_MACHINES)
    for i, (m, step) in enumerate(zip(machine, steps, strict=False)):
        current[m] += step
        if current[m] > limit[m]:
            current[m], limit[m] = 0.0, rng.uniform(200, 250)
        wear[i] = current[m]
    return wear


def demo_frame(rows: int = 3000, seed: int = 0, *, label: bool = True) -> pd.DataFrame:
    """``rows`` readings, the same for the same ``seed``; without ``failure`` if not ``label``."""
    for key, value, low in (("rows", rows, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"demo {key} = {value!r} is not allowed; give a whole number >= {low}")
    rng = np.random.default_rng(seed)
    types = rng.permutation(np.repeat(list(TYPES), list(TYPES.values())))
    machine = rng.integers(0, N_MACHINES, rows)
    mtype = types[machine]

    minutes = np.arange(rows) * 10.0 + rng.integers(0, 120, rows) / 60.0
    stamps = START + pd.to_timedelta(np.round(minutes * 60), unit="s")
    hour = (minutes / 60.0) % 24
    air = 22.0 + 3.0 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 0.6, rows)
    process = air + 10.0 + rng.normal(0, 1.0, rows)
    torque = np.clip(rng.normal(40.0, 10.0, rows), 3.0, 80.0)
    rpm = np.clip(1500 + 25.0 * (40.0 - torque) + rng.normal(0, 90, rows), 1150, 2900).round()
    wear = _tool_wear(machine, np.vectorize(WEAR_STEP.get)(mtype), rng)
    vibration = 0.6 + rpm / 1200.0 + wear / 120.0 + rng.lognormal(-1.0, 0.5, rows)

    # Soft versions of the AI4I 2020 failure modes (tool worn past ~215 min; process-air gap under
    # 8.6 K below 1380 rpm; power outside ~3.6-8.8 kW; wear x torque over the type's limit), plus
    # noise. The offset -4.8 puts 5-8% of rows at failure for any seed at 3000 rows.
    power_kw = torque * rpm * 2 * np.pi / 60 / 1000
    strain = wear * torque / np.vectorize(STRAIN_LIMIT.get)(mtype)
    risk = (
        6.0 * _sigmoid((wear - 215) / 6)  # tool wear-out
        + 6.0 * _sigmoid((8.6 - (process - air)) / 0.25) * _sigmoid((1380 - rpm) / 30)  # heat dissipation
        + 6.0 * _sigmoid((power_kw - 8.8) / 0.2) + 6.0 * _sigmoid((3.6 - power_kw) / 0.2)  # power out of band
        + 6.0 * _sigmoid((strain - 1.0) / 0.04)  # overstrain
    )
    failure = rng.random(rows) < _sigmoid(risk - 4.8 + rng.normal(0, 0.5, rows))

    vibration[rng.random(rows) < 0.01] = np.nan
    frame = pd.DataFrame({
        "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine_id": [f"M-{m + 1:04d}" for m in machine],
        "machine_type": mtype,
        "air_temp_c": air.round(1),
        "process_temp_c": process.round(1),
        "rpm": rpm.astype(np.int64),
        "torque_nm": torque.round(1),
        "vibration_mm_s": vibration.round(2),
        "tool_wear_min": wear.round().astype(np.int64),
        DEMO_LABEL: failure.astype(np.int64),
    })
    return frame if label else frame.drop(columns=DEMO_LABEL)


def summarize_scored(path: str | Path) -> str:
    """How a scored demo file did: predictions at p >= 0.5, and how well the model ranks risk.

    Failures are rare and soft, so few rows reach p >= 0.5; what a maintenance
    team uses is the ranking: of the rows the model puts most at risk, how many
    really failed, against what a random pick would find.

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> _ = pd.DataFrame({"failure": [1, 0, 0, 1], "prediction": [1, 0, 0, 0],
    ...                   "proba_1": [0.9, 0.1, 0.2, 0.4]}).to_csv(f, index=False)
    >>> print(summarize_scored(f))
    scored 4 rows: 1 predicted failure (p >= 0.5), 1 of them real; 2 real failures in all.
    The 2 rows the model ranks most at risk hold 2 of them; a random pick would hold about 1.0.
    """
    frame = pd.read_csv(path)
    truth = frame[DEMO_LABEL] == 1
    predicted = frame["prediction"] == 1
    real = int(truth.sum())
    hit = int(truth[frame["proba_1"].rank(method="first", ascending=False) <= real].sum())
    plural = "" if predicted.sum() == 1 else "s"
    return (f"scored {len(frame):,} rows: {int(predicted.sum())} predicted failure{plural} (p >= 0.5), "
            f"{int((truth & predicted).sum())} of them real; {real} real failures in all.\n"
            f"The {real} rows the model ranks most at risk hold {hit} of them; a random pick would hold about "
            f"{real * real / max(len(frame), 1):.1f}.")


def demo_table(seed: int = 0) -> Table:
    """:func:`demo_frame` as the :class:`~edgeml.data.ingest.Table` a build reads, its sha256 over its CSV text.

    >>> demo_table(seed=1).format, demo_table(seed=1).sha256 == demo_table(seed=1).sha256
    ('demo', True)
    """
    frame = demo_frame(seed=seed)
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    return Table(frame=frame, source="built-in demo data", format="demo", sha256=digest, rows=len(frame))


def write_demo_csv(path: str | Path, rows: int = 3000, seed: int = 0, *, label: bool = True) -> Path:
    """Write :func:`demo_frame` to ``path`` as CSV (creating folders) and return the path."""
    frame, path = demo_frame(rows, seed, label=label), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


if __name__ == "__main__":  # used by `make demo`: python -m edgeml.data.demo dist/demo-scored.csv
    import sys

    print(summarize_scored(sys.argv[1]))
