"""``edgeml``: the host command. Thin: parse, build a config, call the library, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeml.errors import EdgeMLError


def _fail(exc: EdgeMLError):
    click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
    sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="edgeml")
def main():
    """edgeml: from a table of data to a verified model bundle for small devices.

    \b
    Quick start:
      edgeml build --target rpi4                     # built-in demo data
      edgeml build --data sensors.csv --label failure --target rpi4
      edgeml-runtime score dist/sensors-1 --input new.csv
    """


@main.command()
@click.option("--data", "-d", help="Training data: a .csv/.tsv, .parquet, .jsonl file, "
              "sqlite:///file.db?table=NAME or postgresql+psycopg://user@host/db?table=NAME. Omit to use the "
              "built-in demo data.")
@click.option("--label", "-l", help="The column to predict.")
@click.option("--target", "-t",
              help="Hardware target profile name (see `edgeml targets`) or path to a .toml. [default: rpi4]")
@click.option("--task", type=click.Choice(["classification", "regression"]),
              help="Inferred from the label when omitted.")
@click.option("--time-budget", type=float, help="Seconds the model search may take. [default: 60]")
@click.option("--max-trials", "max_iter", type=int,
              help="Stop the search after this many trials (reproducible; overrides --time-budget).")
@click.option("--metric",
              help="What the search optimises: e.g. roc_auc, f1, recall, balanced_accuracy, accuracy, log_loss; "
                   "r2, rmse, mae. A binary build tunes its decision threshold for it. [default: auto]")
@click.option("--drop", multiple=True, metavar="COL[,COL...]",
              help="Columns to leave out (e.g. ones that leak the label). Repeatable.")
@click.option("--estimators", metavar="NAME[,NAME...]",
              help="Search only these learners (a subset of what the target allows).")
@click.option("--time-column", help="Split train/validation/test in this column's time order instead of at random.")
@click.option("--query", help="SQL query to read, with --data sqlite:///file.db or postgresql+psycopg://....")
@click.option("--seed", type=int, help="Random seed for the split and the search. [default: 0]")
@click.option("--name", help="Bundle name. [default: the data file's name, or 'demo']")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Bundle folder. [default: dist/<name>-<version>]")
@click.option("--force", is_flag=True, default=None, help="Replace an existing --out folder.")
@click.option("--synthetic-samples", is_flag=True, default=None,
              help="Draw the bundle's sample rows (samples.json) from the drift reference instead of the test split, "
                   "for data that must not leave the workstation.")
@click.option("--refit-all", is_flag=True, default=None,
              help="After evaluation on the test split, refit the model on every labelled row (test rows too); "
                   "the manifest's search.refit keeps the test metrics measured before that refit.")
@click.option("--keep-label-outliers", is_flag=True, default=None,
              help="Keep the few regression labels that lie far outside the rest (more than 10 interquartile "
                   "ranges beyond the quartiles, on the raw and the log scale), which a build otherwise leaves out "
                   "as entry errors, naming them.")
@click.option("--validation", type=click.Choice(["auto", "cv", "holdout"]),
              help="How trials are scored: auto is 5-fold cross-validation under 10,000 train+validation rows and a "
                   "holdout from there (or with --time-column); cv or holdout force one. [default: auto]")
@click.option("--folds", type=int, help="Cross-validation folds (2-20). [default: 5]")
@click.option("--select-inputs/--all-inputs", "select_inputs", default=None,
              help="Drop the input columns that do not help the validation metric (permutation importance), so "
                   "the device reads fewer sensors; the manifest's dropped list says why. "
                   "[default: on for microcontroller targets, off for the others]")
@click.option("--backend", metavar="local|spark|ray",
              help="Where the search's trials run: this process, or concurrently on a cluster (docs/cluster.md; "
                   "spark needs pip install 'edgeml[spark]'). [default: local]")
@click.option("--cluster-address", help="The cluster to run trials on (for spark a master URL: spark://host:7077, "
                                        "yarn, local[4]). [default: the engine's own, e.g. MASTER]")
@click.option("--concurrent-trials", type=int, help="Trials run at once on a cluster backend. [default: 2]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Settings file. [default: ./edgeml.toml if present]")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's manifest as JSON on stdout when done.")
@click.option("--quiet", "-q", is_flag=True, help="No progress, only errors and the result.")
def build(config_path, as_json, quiet, drop, estimators, **flags):
    """Search, export and verify a model, and write a versioned bundle.

    \b
    Stages: ingest → schema → split → search (FLAML) → export (ONNX, with
    preprocessing) → verify (through edgeml_runtime, against the host model)
    → bundle (folder + .tar.gz with manifest.json).

    \b
    Examples:
      edgeml build --target rpi4
      edgeml build -d ai4i2020.csv -l "Machine failure" --drop UDI,"Product ID",TWF,HDF,PWF,OSF,RNF
      edgeml build -d plant.parquet -l PE --task regression --time-budget 300 --target x86-64

    Settings can also live in ./edgeml.toml under [build] (keys as the long
    options, with underscores) and [search] (backend, address,
    concurrent_trials); flags win over the file.
    """
    from edgeml.build import build as run_build
    from edgeml.config import resolve, split_list
    from edgeml.progress import ConsoleReporter, summary

    flags["drop"] = tuple(c for item in drop for c in split_list(item))
    flags["estimators"] = split_list(estimators) if estimators else ()
    try:
        config = resolve(flags, config_path)
        result = run_build(config, ConsoleReporter(quiet=quiet))
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result.manifest.to_dict(), indent=2))
    else:
        click.echo(summary(result), err=quiet)


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def targets(ctx, as_json):
    """List the hardware target profiles (`edgeml targets show NAME` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgeml.targets.profiles import list_targets

    try:
        profiles = list_targets()
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    width = max(len(p.name) for p in profiles)
    formats = max(len(", ".join(p.formats)) for p in profiles)
    for p in profiles:
        click.echo(f"{p.name:<{width}}  {p.arch:<8} {p.ram_mb:>6} MB  {', '.join(p.formats):<{formats}}  "
                   f"{', '.join(p.precisions):<15} {p.description}")


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def targets_show(name, as_json):
    """Print one profile, resolved with everything it inherits. NAME may be a path to a .toml."""
    from edgeml.targets.profiles import load_target, render_profile

    try:
        profile = load_target(name)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(json.dumps(profile.to_dict(), indent=2) if as_json else render_profile(profile))


@main.command("demo-data")
@click.option("--rows", type=int, default=3000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="CSV file to write.")
@click.option("--no-label", is_flag=True, help="Leave out the label column (rows to score).")
def demo_data(rows, seed, output, no_label):
    """Write the built-in demo sensor data set as CSV."""
    from edgeml.data.demo import write_demo_csv

    try:
        path = write_demo_csv(Path(output), rows=rows, seed=seed, label=not no_label)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(f"wrote {rows} rows to {path}", err=True)


@main.command()
@click.argument("bundle")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(bundle, as_json):
    """Re-check a bundle (folder or .tar.gz) as a CI job would: file hashes, manifest schema, parity.

    \b
    file      every file's size and sha256 against the manifest; no unlisted files
    schema    the manifest against the manifest.schema.json edgeml_runtime ships
    manifest  fails when edgeml_runtime refuses the manifest (then nothing is scored)
    parity    every artifact scores the bundle's sample rows (samples.json) as it did at build time

    The first line (and "identity" in --json) is the bundle's identity: the
    sha256 of its manifest, which devices report in their birth and drift
    messages. Exits 0 when every check passes, 1 when one fails, 2 when the
    bundle cannot be read.
    """
    from edgeml.verify.bundle_check import check_bundle, render

    try:
        report = check_bundle(bundle)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render(report))
    sys.exit(0 if report.passed else 1)


@main.command()
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Folder for the C files.")
@click.option("--form", type=click.Choice(["c", "tflm"]),
              help="c: the model as plain C tables and loops; tflm: the TFLite file for TensorFlow Lite Micro. "
                   "[default: the target profile's `firmware`]")
@click.option("--artifact",
              help="Which TFLite artifact (its path in the manifest), for --form tflm. "
                   "[default: the one for TFLite Micro]")
def firmware(bundle, out, form, artifact):
    """Write C sources that put a bundle's model into microcontroller firmware.

    \b
    --form c (plain C99, float32; no interpreter, no arena, no heap):
    edgeml_model.h   EDGEML_N_FEATURES, EDGEML_N_OUTPUTS, the feature names and
                     code tables, edgeml_predict() and edgeml_label()
    edgeml_model.c   the preprocessing and the model as const tables and loops

    \b
    --form tflm (TensorFlow Lite Micro):
    edgeml_model.c   the model as a 16-byte aligned const array (it stays in flash)
    edgeml_model.h   feature order and code tables, the operators to register
                     (EDGEML_REGISTER_OPS), the arena size TFLite Micro measured,
                     and for int8 models edgeml_encode() / edgeml_output()

    \b
    Example:
      edgeml build --data sensors.csv --label failure --target cortex-m7
      edgeml firmware dist/sensors-1 -o firmware/
    """
    from edgeml.export.firmware import write_firmware_form

    try:
        paths = write_firmware_form(bundle, out, form, artifact)
    except EdgeMLError as exc:
        _fail(exc)
    for path in paths:
        click.echo(f"wrote {path}", err=True)


@main.command()
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--target", "-t", help="The device's target profile (name or .toml), e.g. rpi4. "
              "[default: the profile the bundle was built for]")
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Package folder to write (must not exist, or be empty).")
@click.option("--tar", is_flag=True, help="Also write <out>.tar.gz beside it (reproducible).")
@click.option("--wheels-from", type=click.Path(file_okay=False, exists=True),
              help="Take the wheels from this folder instead of PyPI (an edgeml_runtime-*.whl there is used as is).")
def package(bundle, target, out, tar, wheels_from):
    """Write an offline device package: runtime and dependency wheels, the bundle, a systemd service.

    \b
    Example:
      edgeml build --data sensors.csv --label failure --target rpi4 -o dist/sensors-1
      edgeml package dist/sensors-1 --target rpi4 -o dist/sensors-1-rpi4 --tar
      scp dist/sensors-1-rpi4.tar.gz pi@raspberrypi.local:
      # on the Pi: tar xzf sensors-1-rpi4.tar.gz && sudo sensors-1-rpi4/install.sh
    See docs/device.md.
    """
    from edgeml.package import make_package

    try:
        made = make_package(bundle, target, out, tar=tar, wheels_from=wheels_from)
    except EdgeMLError as exc:
        _fail(exc)
    for note in made.notes:
        click.echo(click.style("note: ", fg="yellow") + note, err=True)
    click.echo(f"package  {made.folder}/  ({len(made.wheels)} wheels: {made.requirement})", err=True)
    if made.archive:
        click.echo(f"archive  {made.archive}", err=True)
    click.echo(f"next     copy it to the device, then: sudo {made.folder.name}/install.sh", err=True)


@main.command()
@click.argument("bundle")
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help="Write the page here. [default: report.html in the current folder]")
@click.option("--open", "open_it", is_flag=True, help="Open the page in the web browser.")
def report(bundle, out, open_it):
    """Draw a bundle's build report (report.html) again from its report.json, offline.

    Every build writes report.html into the bundle: the test metrics beside
    the baseline, the confusion matrix and ROC/PR curves (classification) or
    predicted against true values (regression), each input's importance and
    drift reference, the search frontier against the target's budgets, and
    every artifact with its size and parity. This command draws it from the
    bundle alone (a folder or a .tar.gz), e.g. one a release or a device holds.

    \b
    Example:
      edgeml build --data sensors.csv --label failure -o dist/sensors-1
      edgeml report dist/sensors-1.tar.gz -o sensors-1.html --open
    See docs/bundle.md (The build report).
    """
    from edgeml.report import rebuild

    try:
        page = rebuild(bundle)
    except EdgeMLError as exc:
        _fail(exc)
    path = Path(out or "report.html")
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        _fail(EdgeMLError(f"-o {path}: cannot write the report there ({exc.strerror}); pass a writable file"))
    click.echo(f"report   {path}", err=True)
    if open_it:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            click.echo(f"no web browser to open it with here (the BROWSER variable names one); open {path} in "
                       "one yourself", err=True)


@main.group()
def fleet():
    """The fleet: the broker's credentials, the controller (run), what it knows (status, decisions)."""


@fleet.command("credentials")
@click.option("--devices", "devices", type=click.Path(dir_okay=False), required=True,
              help="The device list (TOML): [fleets.<name>] devices = [...], optional [consumers.<name>].")
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Folder for acl, passwd and passwords/ (created; rerunning keeps generated passwords).")
def fleet_credentials(devices, out):
    """Write a Mosquitto ACL and password file binding each device to edgeml/<its fleet>/<its id>/#.

    \b
    acl          acl_file: each device may write below its own topics only;
                 consumers read their fleets (every fleet by default)
    passwd       password_file: PBKDF2-SHA512 ($7$, as mosquitto_passwd), mode 0600
    passwords/   each password in clear (mode 0600): passwords/<fleet>/<device>,
                 for the device's mqtt_password_file or a systemd credential

    \b
    Example:
      edgeml fleet credentials --devices devices.toml --out broker/
      sudo install -o mosquitto -m 600 broker/passwd /etc/mosquitto/edgeml.passwd
      sudo install -o mosquitto -m 644 broker/acl /etc/mosquitto/edgeml.acl
    """
    from edgeml.fleet.credentials import write_credentials

    try:
        written = write_credentials(devices, out)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(written.summary(), err=True)


# `edgeml registry add|list|show|promote|rollback`: the click group lives beside the library it drives (it imports
# nothing heavy).
from edgeml.fleet.registry import registry as _registry  # noqa: E402

main.add_command(_registry)
from edgeml.fleet.rollout_command import rollout as _rollout  # noqa: E402

main.add_command(_rollout)
# `edgeml fleet run` (the controller) and `edgeml fleet retrain` (one retrain now): edgeml/fleet/command.py.
from edgeml.fleet.command import retrain as _fleet_retrain  # noqa: E402
from edgeml.fleet.command import run as _fleet_run  # noqa: E402

fleet.add_command(_fleet_run)
fleet.add_command(_fleet_retrain)

# `edgeml fleet status|decisions`: beside the judge they report on (the store loads when a command runs).
from edgeml.fleet.status import decisions_command, status_command  # noqa: E402

fleet.add_command(status_command)
fleet.add_command(decisions_command)

# `edgeml keys init|rotate|revoke|list` and `edgeml release`: signed releases (edgeml/fleet/release_command.py).
from edgeml.fleet.release_command import keys as _keys  # noqa: E402
from edgeml.fleet.release_command import release as _release  # noqa: E402

main.add_command(_keys)
main.add_command(_release)


if __name__ == "__main__":
    main()
