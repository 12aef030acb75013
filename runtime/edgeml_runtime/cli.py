"""``edgeml-runtime``: score records with a bundle on the device.

Kept on argparse and the standard library so the device needs nothing more
than numpy and the inference engine.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import EdgeMLError, InputError, RowError
from .model import Model
from .records import FORMATS, RecordWriter, guess_format, open_text, read_chunks

SHOW_ERRORS = 10


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeml-runtime",
        description="Score records on a device with a bundle written by `edgeml build`.",
        epilog="Example: edgeml-runtime score dist/demo-1 --input rows.csv --output scored.csv",
    )
    p.add_argument("--version", action="version", version=f"edgeml-runtime {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "score",
        help="score a CSV or JSON Lines file (or stdin) and write it back with predictions",
        description=(
            "Read records, check each against the bundle's input schema, and write them back with a "
            "'prediction' column and, for classifiers, one 'proba_<class>' column per class. "
            "Columns the model does not use are passed through unchanged."
        ),
        epilog=(
            "Examples:\n"
            "  edgeml-runtime score dist/demo-1 --input rows.csv --output scored.csv\n"
            "  cat rows.jsonl | edgeml-runtime score dist/demo-1 --input - --format jsonl --on-error skip\n"
            "\nExit status: 0 when every row was scored (or skipped with --on-error skip), 2 on bad input."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("bundle", help="bundle folder or .tar.gz written by `edgeml build`")
    s.add_argument("--input", "-i", required=True, metavar="PATH", help="records to score; '-' reads stdin")
    s.add_argument("--format", "-f", choices=FORMATS, help="input and output format (default: from the file name, else csv)")
    s.add_argument("--output", "-o", default="-", metavar="PATH", help="where to write scored records (default: stdout)")
    s.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail: stop at the first bad row, exit 2 (default); skip: score the rest and report the bad rows")
    s.add_argument("--artifact", metavar="PATH", help="which artifact in the bundle to run (default: the first this device can)")
    s.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")

    i = sub.add_parser("info", help="describe a bundle: model, inputs, artifacts")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"score": _score, "info": _info}[args.command](args)
    except RowError as exc:
        print(f"edgeml-runtime: error: {getattr(args, 'input', '')}: {exc}; fix the value, or pass "
              "--on-error skip to score the other rows", file=sys.stderr)
        return exc.exit_code
    except EdgeMLError as exc:
        print(f"edgeml-runtime: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _score(args) -> int:
    model = Model.load(args.bundle, artifact=args.artifact, threads=args.threads)
    fmt = guess_format(args.input, args.format)
    skipped: list[RowError] = []
    scored = 0
    noted_ignored = False
    with open_text(args.input) as src, open_text(args.output, "w") as dst:
        writer = RecordWriter(dst, fmt, model.classes)
        for chunk in read_chunks(src, fmt):
            if chunk.columns is not None:
                missing = model.encoder.missing_columns(chunk.columns)
                if missing:
                    raise InputError(
                        f"{args.input} has no column(s) {', '.join(map(repr, missing))}; the model needs "
                        f"{', '.join(map(repr, model.manifest.schema.names))}"
                    )
            if chunk.errors and args.on_error == "fail":
                raise chunk.errors[0]
            rows = [chunk.first_row + j for j, r in enumerate(chunk.records) if r is not None]
            records = [r for r in chunk.records if r is not None]
            try:
                result = model.predict(records, on_error=args.on_error)
            except RowError as e:
                raise RowError(rows[e.row - 1], e.column, e.reason) from None
            errors = chunk.errors + [RowError(rows[e.row - 1], e.column, e.reason) for e in result.errors]
            skipped.extend(sorted(errors, key=lambda e: e.row))
            if result.ignored_columns and not noted_ignored:
                print(f"edgeml-runtime: note: column(s) {', '.join(map(repr, result.ignored_columns))} are not "
                      "model inputs; passed through unchanged", file=sys.stderr)
                noted_ignored = True
            writer.write([records[i] for i in result.rows], result.labels, result.probabilities)
            scored += len(result)
    if skipped:
        print(f"edgeml-runtime: scored {scored} row(s), skipped {len(skipped)}:", file=sys.stderr)
        for e in skipped[:SHOW_ERRORS]:
            print(f"  {e}", file=sys.stderr)
        if len(skipped) > SHOW_ERRORS:
            print(f"  … and {len(skipped) - SHOW_ERRORS} more", file=sys.stderr)
    return 0


def _info(args) -> int:
    from .bundle import open_bundle, read_manifest

    m = read_manifest(open_bundle(args.bundle))
    if args.json:
        print(json.dumps(m.data, indent=2))
        return 0
    d = m.data
    print(f"{d['name']} {d['version']}  ({d['task']}, label {d['label']!r}, target {d.get('target', {}).get('name', '?')})")
    if m.classes:
        print(f"classes: {', '.join(map(str, m.classes))}")
    print("inputs:")
    for c in m.schema.columns:
        extra = f" categories: {', '.join(c.categories[:8])}" if c.categories else (f" range {c.range[0]:g}..{c.range[1]:g}" if c.range else "")
        print(f"  {c.name!r:32} {c.kind:12}{extra}")
    print("artifacts:")
    for a in m.artifacts:
        print(f"  {a.path:24} {a.format:6} {a.precision:5} {a.bytes:>10,} bytes  sha256 {a.sha256[:12]}")
    for split, metrics in (d.get("metrics") or {}).items():
        print(f"{split} metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
