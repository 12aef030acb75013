"""``edgeml-runtime``: score records with a bundle on the device.

Kept on argparse and the standard library so the device needs nothing more
than numpy and the inference engine.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import EdgeMLError, RowError, SettingsError, check_threads, max_threads
from .model import Model
from .records import FORMATS, guess_format, open_input, score_stream

SHOW_ERRORS = 10
#: The flags of ``score`` that set a :class:`~.parsing.ReadLimits` field of the same name.
LIMIT_FLAGS = {
    "max_line_bytes": "a line (or CSV record) longer than this many bytes is a row error",
    "max_value_chars": "a text value longer than this many characters is a row error",
    "max_depth": "JSON nested deeper than this is a row error",
    "max_record_lines": "a quoted CSV value spanning more lines than this counts as an unclosed quote",
}


def _threads(text: str) -> int:
    """``--threads``: a whole number from 1 to :func:`~edgeml_runtime.errors.max_threads`, else a usage error."""
    try:
        return check_threads(int(text))
    except (ValueError, SettingsError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of threads from 1 to {max_threads()} (4 per CPU "
                                         "of this machine); give 1 (the default) up to the number of CPUs") from None


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
            "\nEvery row read is either scored or reported: an unreadable line, an unclosed quote, a value past a "
            "limit is an error for its row, and with --on-error skip the rest are scored.\n"
            "Exit status: 0 when every row was scored (or skipped with --on-error skip), 2 on bad input, on an "
            "empty input, and when no row could be scored."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("bundle", help="bundle folder or .tar.gz written by `edgeml build`")
    s.add_argument("--input", "-i", required=True, metavar="PATH", help="records to score; '-' reads stdin")
    s.add_argument("--format", "-f", choices=FORMATS,
                   help="input and output format (default: from the file name, else csv)")
    s.add_argument("--output", "-o", default="-", metavar="PATH",
                   help="where to write scored records (default: stdout)")
    s.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail: stop at the first bad row, exit 2 (default); "
                        "skip: score the rest and report the bad rows")
    s.add_argument("--artifact", metavar="PATH",
                   help="which artifact in the bundle to run (default: the first this device can)")
    s.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="run the bundle's artifact of this precision (default: the best for this device)")
    s.add_argument("--threads", type=_threads, default=1, metavar="N",
                   help=f"inference threads, 1 to {max_threads()} here (default 1)")
    from .parsing import ReadLimits

    for key, text in LIMIT_FLAGS.items():
        s.add_argument("--" + key.replace("_", "-"), type=int, metavar="N",
                       help=f"{text} (default {getattr(ReadLimits(), key):,})")

    _run_parser(sub)
    _serve_parser(sub)
    _update_parser(sub)

    b = sub.add_parser(
        "bench", help="time the bundle on this device: one-row latency, throughput, cold start, speed factor",
        description="Time the bundle here, through the same code that scores: one-row latency (median, p99), "
                    "batch throughput, cold start of a fresh process to its first prediction, peak RSS, and the "
                    "speed factor this implies for the target profile (the factor that would have made the build's "
                    "predicted one-row latency right). Run it on the device.",
        epilog="Examples:\n  edgeml-runtime bench /opt/edgeml/bundle\n"
               "  edgeml-runtime bench dist/demo-1 --precision int8 --json > bench.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("bundle", help="bundle folder or .tar.gz written by `edgeml build`")
    b.add_argument("--artifact", metavar="PATH", help="which artifact to time (default: the one score would run)")
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="time the artifact of this precision")
    b.add_argument("--seconds", type=float, default=4.0, help="seconds of timing, one row and batches (default 4)")
    b.add_argument("--batch-rows", type=int, default=1000, metavar="N", help="rows a batch (default 1,000)")
    b.add_argument("--cold-starts", type=int, default=3, metavar="N", help="fresh processes timed (default 3)")
    b.add_argument("--json", action="store_true", help="print the measurements as JSON on stdout")

    i = sub.add_parser("info", help="describe a bundle: model, inputs, artifacts")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    return p


def _setting_flags(parser, table, skip: tuple[str, ...] = ()) -> None:
    """One flag per key of a settings table (but ``skip``), its help naming the environment variable and the
    default."""
    from .settings import default_text, env_name, flag_name

    for key, (_, k) in table.keys.items():
        if key in skip:
            continue
        extra = ({"action": "store_const", "const": True} if k.kind is bool
                 else {"type": k.kind, "metavar": key.split("_")[-1].upper()})
        default = default_text(table, key)
        shown = f" [default: {default}]" if default not in (None, False) else ""
        parser.add_argument(flag_name(key), dest=key, default=None, help=f"{k.help} (${env_name(key)}){shown}",
                            **extra)


def _run_parser(sub) -> None:
    from .settings import RUN

    r = sub.add_parser(
        "run",
        help="score a stream, compute drift statistics, and publish them over MQTT",
        description=(
            "Score records as they arrive (JSON Lines or CSV on stdin, a file being appended to, or an MQTT topic), "
            "count them into drift windows against the reference stored in the bundle, and publish birth, drift "
            "and death messages to edgeml/<fleet>/<device>/... Drift windows are kept in a durable outbox until "
            "the broker acknowledges them, so none is lost while the broker is down or the process restarts."
        ),
        epilog=(
            "Every setting can also come from a config file ([run] table, --config or $EDGEML_RUNTIME_CONFIG) or "
            "an environment variable (EDGEML_<SETTING>, e.g. EDGEML_MQTT_PASSWORD); flags win over the file, the "
            "file over the environment.\n\nExamples:\n"
            "  sensor-reader | edgeml-runtime run dist/demo-1 --device-id pi-07 --fleet plant-a --broker mqtt://gw:1883\n"
            "  edgeml-runtime run dist/demo-1 --input /var/log/readings.csv --format csv --follow "
            "--config /etc/edgeml/runtime.toml\n"
            "  edgeml-runtime run dist/demo-1 --input readings.csv --device-id pi-07 --fleet plant-a "
            "--drift-output windows.jsonl   (no broker)\n"
            "\nExit status: 0 when the input ended or a signal stopped the run; 1 when reading the input failed part "
            "way (the rest was not read); 2 on bad settings, or when no row read could be scored."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("bundle", help="bundle folder or .tar.gz written by `edgeml build`")
    r.add_argument("--config", metavar="FILE", help="runtime config file (TOML, [run] table)")
    _setting_flags(r, RUN)


def _serve_parser(sub) -> None:
    from .settings import SERVE

    v = sub.add_parser(
        "serve",
        help="answer predictions over HTTP (Open Inference Protocol v2, /predict, /metrics) and watch them for drift",
        description=(
            "Serve the bundle over HTTP: the Open Inference Protocol v2 (KServe, Triton, MLServer clients) under /v2, "
            "POST /predict for JSON records or CSV, GET /metrics for Prometheus. Every scored request is counted into "
            "drift windows, as `run` counts a stream; windows go to a broker (with --broker) and/or a JSON Lines "
            "file (--drift-output). SIGTERM finishes the requests in flight and sends the last window; SIGHUP loads "
            "the bundle path again and swaps it in without a failed request."
        ),
        epilog=(
            "Every setting can also come from a config file ([serve] table, --config or $EDGEML_RUNTIME_CONFIG) or "
            "an environment variable (EDGEML_<SETTING>, e.g. EDGEML_TOKEN); flags win over the file, the file over "
            "the environment.\n\nExamples:\n"
            "  edgeml-runtime serve dist/demo-1 --port 8080\n"
            "  curl -s localhost:8080/predict -H 'Content-Type: application/json' -d @record.json\n"
            "  edgeml-runtime serve /opt/edgeml/bundle --host 0.0.0.0 --token-file /etc/edgeml/token "
            "--tls-cert-file cert.pem --tls-key-file key.pem --broker mqtts://gw:8883 --device-id pi-07 "
            "--fleet plant-a\n"
            "\nExit status: 0 after a signal stopped it; 2 on bad settings or a bundle that does not load."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("bundle", help="bundle folder or .tar.gz written by `edgeml build`")
    v.add_argument("--config", metavar="FILE", help="runtime config file (TOML, [serve] table)")
    _setting_flags(v, SERVE)


#: The update keys ``edgeml-runtime update`` has no flag for: by hand nothing is fetched (the config file's [update]
#: table still holds them, for run and serve).
BY_HAND_UNUSED = ("update_server", "update_token_file")


def _update_parser(sub) -> None:
    from .settings import UPDATE

    u = sub.add_parser(
        "update",
        help="install a release copied by hand (a USB stick) under the same checks as one over the air",
        description=(
            "Check a release folder written by `edgeml release` (release.json, root.json, bundle.tar.gz) against "
            "this device's root key and trust state, as an update over the air is checked: the signatures, the "
            "fleet, a version above the highest trusted, the expiry and the archive's hash; then unpack it into a "
            "new slot and self-test it on its sample rows with this device's engines. It is switched in on test: "
            "the next start of `edgeml-runtime run` or `serve` loads it and its health gate judges it (commit or "
            "roll back). Run it while the device process is stopped. A release installed by hand also lifts the "
            "stop that too many automatic rollbacks put on updates."
        ),
        epilog=(
            "Settings come from flags, the environment and the config file's [update] table (then [run]): the same "
            "update_* keys as run and serve.\n\nExample:\n"
            "  systemctl stop edgeml-runtime\n"
            "  edgeml-runtime update /media/usb/plant-a/7 --config /etc/edgeml/runtime.toml\n"
            "  systemctl start edgeml-runtime\n"
            "\nExit status: 0 when the release is installed on test; 2 when it was refused (the reason is printed) "
            "or the settings are wrong."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u.add_argument("folder", metavar="RELEASE",
                   help="the release folder edgeml release wrote (release.json, root.json, bundle.tar.gz), or its "
                        "release.json")
    u.add_argument("--config", metavar="FILE", help="runtime config file (TOML, [update] then [run] table)")
    u.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    _setting_flags(u, UPDATE, skip=BY_HAND_UNUSED)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"score": _score, "info": _info, "run": _run, "serve": _serve, "bench": _bench,
                "update": _update}[args.command](args)
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
    from .errors import SettingsError
    from .outputs import output_file
    from .parsing import ReadLimits

    given = {k: getattr(args, k) for k in LIMIT_FLAGS if getattr(args, k) is not None}
    try:
        limits = ReadLimits(**given)
    except SettingsError as exc:
        raise exc.located({}, {k: "flag --" + k.replace("_", "-") for k in given}) from None
    model = Model.load(args.bundle, artifact=args.artifact, precision=args.precision, threads=args.threads)
    fmt = guess_format(args.input, args.format)
    with open_input(args.input) as src, output_file(args.output, args.input) as dst:
        report = score_stream(model, src, dst, fmt, on_error=args.on_error, limits=limits, keep_errors=SHOW_ERRORS,
                              name=args.input)
    if report.ignored_columns:
        print(f"edgeml-runtime: note: column(s) {', '.join(map(repr, report.ignored_columns))} are "
              "not model inputs; passed through unchanged", file=sys.stderr)
    if report.bad:
        print(f"edgeml-runtime: read {report.rows} row(s): scored {report.scored} row(s), skipped {report.bad}:",
              file=sys.stderr)
        for e in report.errors:
            print(f"  {e}", file=sys.stderr)
        if report.bad > len(report.errors):
            print(f"  … and {report.bad - len(report.errors)} more", file=sys.stderr)
    if report.rows and not report.scored:
        print(f"edgeml-runtime: error: {args.input}: none of its {report.rows} row(s) could be scored",
              file=sys.stderr)
        return 2
    return 0


def _run(args) -> int:
    from .agent import run_device
    from .settings import RUN, resolve_settings

    if args.mqtt_password is not None:
        print("edgeml-runtime: warning: --mqtt-password shows in ps to every user of this machine; use "
              "--mqtt-password-file, a systemd credential mqtt_password, or EDGEML_MQTT_PASSWORD", file=sys.stderr)
    settings = resolve_settings({k: getattr(args, k) for k in RUN.keys}, config=args.config)
    stats = run_device(args.bundle, settings)
    if stats.rows and not stats.scored:
        print(f"edgeml-runtime: error: none of the {stats.rows} row(s) read could be scored (the log above names "
              "the first bad rows); check the input's format (--format) and columns", file=sys.stderr)
        return 2
    return 0


def _serve(args) -> int:
    from .serve.server import serve
    from .settings import SERVE, resolve_settings

    for secret, better in (("mqtt_password", "--mqtt-password-file"), ("token", "--token-file")):
        if getattr(args, secret) is not None:
            print(f"edgeml-runtime: warning: --{secret.replace('_', '-')} shows in ps to every user of this machine; "
                  f"use {better} or the environment variable", file=sys.stderr)
    settings = resolve_settings({k: getattr(args, k) for k in SERVE.keys}, config=args.config, command="serve")
    serve(args.bundle, settings)
    return 0


def _update(args) -> int:
    import json
    import logging

    from .errors import UpdateError
    from .settings import UPDATE, resolve_settings
    from .update.agent import UpdateAgent

    flags = {k: getattr(args, k) for k in UPDATE.keys if k not in BY_HAND_UNUSED}
    settings = resolve_settings(flags, config=args.config, command="update")
    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s", stream=sys.stderr)
    agent = UpdateAgent(settings.update, settings.device)
    steps: list[dict] = []
    agent.report = steps.append
    release = agent.install_by_hand(args.folder)
    last = steps[-1] if steps else {}
    if args.json:
        print(json.dumps({"installed": release is not None, "release": last.get("release"),
                          "bundle": last.get("bundle"), "slot": str(agent.slots.current() or ""),
                          "reason": last.get("reason"), "refusal": last.get("refusal"), "steps": steps}))
    if release is None:
        raise UpdateError(f"{args.folder}: release not installed: {last.get('reason') or 'see the log above'}")
    if not args.json:
        print(f"release {release.version} (bundle {release.bundle.identity[:12]}…) installed on test in "
              f"{agent.slots.current()}; the next start of edgeml-runtime run or serve loads it, and its health gate "
              "commits it or rolls it back")
    return 0


def _bench(args) -> int:
    from .benchmark import bench, describe
    from .errors import SettingsError
    from .native_stderr import LITERT_CHATTER, without_lines

    if args.seconds <= 0 or args.batch_rows < 1 or args.cold_starts < 1:
        raise SettingsError("--seconds must be above 0, --batch-rows and --cold-starts at least 1")
    with without_lines(*LITERT_CHATTER):
        result = bench(args.bundle, artifact=args.artifact, precision=args.precision, seconds=args.seconds,
                       batch_rows=args.batch_rows, cold_starts=args.cold_starts,
                       progress=lambda text: print(f"timing {text} ...", file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else describe(result))
    return 0


def _info(args) -> int:
    from .bundle import open_bundle, read_manifest

    with open_bundle(args.bundle) as folder:
        m = read_manifest(folder)
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    print(f"{m.name} {m.version}  ({m.task}, label {m.label!r}, target {m.target.name})")
    print(f"identity: {m.identity}")
    if m.classes:
        print(f"classes: {', '.join(map(str, m.classes))}")
    print("inputs:")
    for c in m.schema.columns:
        extra = (f" categories: {', '.join(c.categories[:8])}" if c.categories
                 else (f" range {c.range[0]:g}..{c.range[1]:g}" if c.range else ""))
        print(f"  {c.name!r:32} {c.kind:12}{extra}")
    print("artifacts:")
    for a in m.artifacts:
        print(f"  {a.path:24} {a.format:6} {a.precision:5} {a.bytes:>10,} bytes  sha256 {a.sha256[:12]}")
    for split, metrics in m.metrics.to_dict().items():
        print(f"{split} metrics: "
              + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
    return 0


def entry() -> None:
    """The ``edgeml-runtime`` command: :func:`main`, then exit. A run stopped by SIGTERM while its input thread
    still waits on stdin (an open pipe) leaves at once after flushing: the interpreter's shutdown would otherwise
    abort the process (it cannot take stdin's lock from that thread) with status 134 instead of the run's own."""
    import threading

    code = main()
    if any(t.name == "edgeml-input" and t.is_alive() for t in threading.enumerate()):
        import logging
        import os

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
