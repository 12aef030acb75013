"""The shared real tables, and variants derived from them, as a user would hand them to ``edgeml build``.

Each :class:`Case` names a file of ``../shared/datasets`` and, for a variant,
a function that rewrites its rows the way tables out in the world are written:
a class made rare, labels with stray whitespace, dates in other orders, numbers
with units, decimal commas and ranges, a DataFrame index written out with an
empty header cell. Variants are derived deterministically (a seeded generator),
so every run builds the same bytes; ``tests/test_real_tables.py`` builds and
scores each one, and ``python tests/real_tables.py`` prints what the builds
inferred (the table in #11's closing note).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

Rows = list[dict[str, str]]

SALARY = "Yearly brutto salary (without bonus and stocks) in EUR"
#: it-salary's columns that leak the label (next to it in the survey): left out, as a careful user would.
SALARY_LEAKS = (
    "Yearly bonus + stocks in EUR",
    "Annual brutto salary (without bonus and stocks) one year ago. Only answer if staying in the same country",
    "Annual bonus+stocks one year ago. Only answer if staying in same country",
)
STRENGTH = "Concrete compressive strength(MPa, megapascals) "
CEMENT = "Cement (component 1)(kg in a m^3 mixture)"
WATER = "Water  (component 4)(kg in a m^3 mixture)"
AGE = "Age (day)"


@dataclass(frozen=True)
class Case:
    """One table to build: a shared file, the label, and how the variant rewrites it (None: the file as it is)."""

    name: str
    source: str
    label: str
    drop: tuple[str, ...] = ()
    rewrite: Callable[[Rows, np.random.Generator], tuple[list[str] | None, Rows]] | None = None
    delimiter: str = ","
    #: column -> (kind, number decimal mark or date order or None) the build must infer
    expect: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: columns the build must leave out, and a word their reason must hold
    dropped: dict[str, str] = field(default_factory=dict)
    #: words that must appear in the build's notices (each a lower-case fragment)
    notices: tuple[str, ...] = ()
    #: column -> {raw text: the number the device must read from it (None: missing), or for a datetime
    #: {part: value} for the parts the column has}
    reads: dict[str, dict[str, float | dict | None]] = field(default_factory=dict)

    def write(self, datasets: Path, folder: Path) -> Path:
        """The case's CSV in ``folder``: the shared file itself, or the variant written from it."""
        path = datasets / self.source
        if self.rewrite is None:
            return path
        header, rows = read_rows(path)
        new_header, rows = self.rewrite(rows, np.random.default_rng(11))
        out = folder / f"{self.name}.csv"
        write_rows(out, new_header if new_header is not None else header, rows, self.delimiter)
        return out


def read_rows(path: Path) -> tuple[list[str], Rows]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def write_rows(path: Path, header: list[str], rows: Rows, delimiter: str = ",") -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(h, "") for h in header])
    path.write_text(buffer.getvalue(), encoding="utf-8")


# -- the variants ------------------------------------------------------------------------------


def rare_class(rows: Rows, rng: np.random.Generator) -> tuple[None, Rows]:
    """heart-disease's 0/1 target as words, five rows of a third, rare class, and a few labels with a stray tab."""
    words = {"0": "healthy", "1": "disease"}
    for row in rows:
        row["target"] = words[row["target"]]
    picked = rng.choice(len(rows), size=9, replace=False)
    for i in picked[:5]:
        rows[i]["target"] = "borderline"
    for i in picked[5:]:
        rows[i]["target"] += "\t"
    return None, rows


def index_and_dates(rows: Rows, rng: np.random.Generator) -> tuple[list[str], Rows]:
    """concrete with its DataFrame index written out (an empty first header cell) and the day each mix was cast
    (``MM/DD/YYYY HH:MM``) and tested (``dd.mm.yyyy``, the cast date plus the age in days)."""
    start = datetime(2019, 1, 7, 8, 0)
    for i, row in enumerate(rows):
        cast = start + timedelta(days=int(rng.integers(0, 700)), hours=int(rng.integers(0, 10)),
                                 minutes=int(rng.choice([0, 15, 30, 45])))
        tested = cast + timedelta(days=int(row[AGE]))
        row[""] = str(i)
        row["cast at"] = f"{cast.month:02}/{cast.day:02}/{cast.year} {cast.hour:02}:{cast.minute:02}"
        row["tested on"] = f"{tested.day:02}.{tested.month:02}.{tested.year}"
    header = ["", *(k for k in rows[0] if k not in ("", "cast at", "tested on")), "cast at", "tested on"]
    return header, rows


def units_and_commas(rows: Rows, rng: np.random.Generator) -> tuple[None, Rows]:
    """concrete as a European spreadsheet writes it: ``;`` between fields, decimal commas (the label's too),
    units after the numbers, a few ages among plain numbers given as ranges (the housing table's area
    column), and a few cells not filled in with a number."""
    for row in rows:
        row[CEMENT] = _comma(row[CEMENT]) + " kg"
        row[WATER] = _comma(row[WATER])
        row[STRENGTH] = _comma(row[STRENGTH])
    picked = rng.choice(len(rows), size=24, replace=False)
    for i in picked[:16]:
        age = int(rows[i][AGE])
        rows[i][AGE] = f"{max(1, age - 3)} - {age + 3}"
    for i in picked[16:]:
        rows[i][WATER] = "unknown"
    return None, rows


def _comma(text: str) -> str:
    value = float(text)
    return f"{value:.3f}".rstrip("0").rstrip(".").replace(".", ",") if math.isfinite(value) else text


def iso_and_names(rows: Rows, rng: np.random.Generator) -> tuple[None, Rows]:
    """it-salary with its timestamps rewritten: most as ISO 8601 with a ``Z`` or an offset, some with month
    names (``24 Nov 2020 11:14``)."""
    for row in rows:
        when = datetime.strptime(row["Timestamp"], "%d/%m/%Y %H:%M:%S")
        style = int(rng.integers(0, 3))
        if style == 0:
            row["Timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif style == 1:
            row["Timestamp"] = (when + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")
        else:
            row["Timestamp"] = when.strftime("%d %b %Y %H:%M")
    return None, rows


CASES = (
    Case("it-salary", "it-salary-2020.csv", SALARY, drop=SALARY_LEAKS,
         expect={"Timestamp": ("datetime", "dmy"), "Age": ("numeric", None),
                 "Total years of experience": ("numeric", "*"), "Number of vacation days": ("numeric", "*")},
         reads={"Total years of experience": {"1,5": 1.5, "2,5": 2.5, "less than year": None, "7": 7.0},
                "Number of vacation days": {"~25": 25.0, "23+": 23.0, "unlimited": None, "37.5": 37.5},
                "Timestamp": {"24/11/2020 11:14:15": {"month": 11, "day": 24, "hour": 11}}}),
    Case("it-salary-iso-dates", "it-salary-2020.csv", SALARY, drop=SALARY_LEAKS, rewrite=iso_and_names,
         expect={"Timestamp": ("datetime", "ymd")},
         reads={"Timestamp": {"2020-11-24T11:14:15Z": {"day": 24, "hour": 11},
                              "2020-11-24T12:14:15+01:00": {"day": 24, "hour": 11},
                              "24 Nov 2020 11:14": {"month": 11, "day": 24, "hour": 11, "minute": 14}}}),
    Case("heart-disease", "heart-disease.csv", "target", expect={"oldpeak": ("numeric", None)}),
    Case("heart-disease-rare-class", "heart-disease.csv", "target", rewrite=rare_class,
         notices=("borderline", "whitespace")),
    Case("concrete", "concrete.csv", STRENGTH, expect={AGE: ("numeric", None)}),
    Case("concrete-index-dates", "concrete.csv", STRENGTH, rewrite=index_and_dates,
         expect={"cast at": ("datetime", "mdy"), "tested on": ("datetime", "dmy")}, dropped={"column_1": "unnamed"},
         reads={"cast at": {"01/22/2020 17:45": {"month": 1, "day": 22, "hour": 17, "minute": 45}},
                "tested on": {"09.05.2011": {"month": 5, "day": 9, "year": 2011}}}),
    Case("concrete-units-commas", "concrete.csv", STRENGTH, rewrite=units_and_commas, delimiter=";",
         notices=("read as numbers written as text (decimal ','",),
         expect={CEMENT: ("numeric", ","), WATER: ("numeric", ","), AGE: ("numeric", "*")},
         reads={CEMENT: {"298,2 kg": 298.2}, WATER: {"unknown": None, "209,7": 209.7}, AGE: {"25 - 31": 28.0}}),
)


def describe(case: Case, manifest, notices: list[str]) -> str:
    """What a build inferred for each column of ``case``, and its test metric, as Markdown (#11's closing note)."""
    lines = [f"### {case.name} ({case.source}{', derived' if case.rewrite else ''}): label {case.label.strip()!r}",
             "", "| column | read as |", "|---|---|"]
    for c in manifest.schema.columns:
        how = c.kind
        if c.number_format is not None:
            how += f", number format decimal {c.number_format.decimal!r} grouping {c.number_format.grouping!r}"
        if c.kind == "datetime":
            how += f", {c.date_order or 'ISO 8601'}; parts {', '.join(c.parts)}"
        if c.kind == "categorical":
            how += f", {len(c.categories)} categories"
        lines.append(f"| {c.name.strip()!r} | {how} |")
    for d in manifest.dropped:
        lines.append(f"| {d.name.strip()!r} | left out: {d.reason} |")
    test = manifest.metrics.test or {}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in test.items() if isinstance(v, float))
    lines += ["", f"Task {manifest.task}; test metrics: {shown}.", ""]
    lines += [f"- {n}" for n in notices]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python tests/real_tables.py OUT_FOLDER: build every case, print what each inferred
    import sys
    import tempfile

    from edgeml.build import Reporter, build
    from edgeml.config import BuildConfig

    class _Notices(Reporter):
        def __init__(self):
            self.notices = []

        def notice(self, text):
            self.notices.append(text)

    datasets = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    for case in CASES:
        told = _Notices()
        result = build(BuildConfig(data=str(case.write(datasets, folder)), label=case.label, drop=case.drop,
                                   target="x86-64", max_iter=20, seed=0, out=str(folder / case.name), force=True),
                       told)
        print(describe(case, result.manifest, told.notices))
