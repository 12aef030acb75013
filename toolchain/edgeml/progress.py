"""Show a build's progress on the terminal (stderr), so stdout stays for machine-readable output."""

from __future__ import annotations

import sys
import time

import click

from edgeml.build import STAGES, BuildResult, Reporter
from edgeml.search.trials import Trial
from edgeml.verify.baseline import describe
from edgeml.verify.metrics import HEADLINE


class ConsoleReporter(Reporter):
    """One line per stage; during the search a live status line on a terminal, improvements otherwise."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.best: float | None = None
        self.started = time.monotonic()
        self._live = False

    def _echo(self, text: str) -> None:
        if self.quiet:
            return
        if self._live:
            click.echo("\r\033[K", file=self.stream, nl=False)
            self._live = False
        click.echo(text, file=self.stream)

    def stage(self, name: str, detail: str) -> None:
        n = STAGES.index(name) + 1 if name in STAGES else 0
        self._echo(click.style(f"[{n}/{len(STAGES)}] {name:<7}", bold=True) + f" {detail}")

    def notice(self, text: str) -> None:
        self._echo(click.style("        note: ", fg="yellow") + text)

    def trial(self, trial: Trial) -> None:
        if self.quiet or trial.best_loss is None:
            return
        line = (f"        trial {trial.iteration + 1:>4}  {trial.elapsed:6.1f}s  {trial.learner:<14} "
                f"best loss {trial.best_loss:.4f} ({trial.best_learner})")
        improved = self.best is None or trial.best_loss < self.best
        self.best = trial.best_loss if improved else self.best
        if self.tty:
            click.echo("\r\033[K" + line, file=self.stream, nl=False)
            self._live = True
        elif improved:
            click.echo(line, file=self.stream)


    def frontier(self, trials, budgets) -> None:
        if self.quiet or not trials:
            return
        limits = [f"{budgets.max_model_bytes / 1024:,.0f} KiB" if budgets.max_model_bytes else None,
                  f"{budgets.latency_budget_ms:g} ms" if budgets.latency_budget_ms else None]
        shown = " and ".join(x for x in limits if x) or "no budgets"
        self._echo(f"        frontier: the best validation loss at each size and predicted target latency ({shown}):")
        for t in trials[:FRONTIER_ROWS]:
            over = f"  over budget: {', '.join(t.broken)}" if t.broken else ""
            self._echo(f"          {t.learner:<14} loss {t.loss:.4f}  {t.cost.model_bytes / 1024:9.1f} KiB  "
                       f"{t.cost.latency_ms:8.3f} ms{over}")
        if len(trials) > FRONTIER_ROWS:
            self._echo(f"          … {len(trials) - FRONTIER_ROWS} more in the manifest (search.trial_log)")


FRONTIER_ROWS = 8


def summary(result: BuildResult) -> str:
    """The closing lines of a build: model, test metrics, artifacts, where the bundle is, its identity, and
    last the path of its report.html."""
    m = result.manifest
    test = m.metrics.test or {}
    headline = " · ".join(f"{k} {test[k]:.4g}" for k in HEADLINE[m.task] if k in test)
    search = m.search
    rows = [
        ("model", f"{search.best_learner} ({m.provenance.model.estimator_class}), "
                  f"{search.trials} trials in {_secs(search.seconds)}, metric {search.metric}"),
        ("test", f"{headline}  ({m.provenance.data.split['test']:,} rows, scored by edgeml_runtime)"),
    ]
    rows[1:1] = _validated(search) + _dimensions(search.best_config)
    if m.decision is not None:
        d = m.decision
        tuned = f"tuned for {d.metric} (validation {d.valid:.4g}, at 0.5 {d.argmax:.4g})" if d.metric else d.reason
        rows.append(("threshold", f"{m.classes[1]!r} when its probability is above {d.threshold:.4g}: {tuned}"))
    split = result.test_split
    rows += [("", line) for line in (describe(split) if split is not None else [])]
    for a in m.artifacts:
        rows.append(("artifact", f"{a.path}  {a.bytes / 1024:.1f} KiB  {a.format} {a.precision}"))
    rows.append(("bundle", f"{result.bundle_dir}/  (+ {result.archive.name})"))
    rows.append(("identity", f"{m.identity}  (sha256 of the manifest; devices report it)"))
    mcu = m.target.tflite_ops == "tflite-micro"  # no runtime on the device: the model goes into its firmware
    rows.append(("next", f"edgeml firmware {result.bundle_dir} -o firmware/  (C sources and an example project)"
                 if mcu else f"edgeml-runtime score {result.bundle_dir} --input rows.csv"))
    if m.report is not None:
        rows.append(("report", f"{result.bundle_dir / m.report.html.path}  (open it in a browser)"))
    title = click.style(f"Built {m.name} v{m.version} for {m.target.name} in {_secs(result.seconds)}",
                        bold=True)
    warn = [] if getattr(split, "one_class", None) is None else [click.style("  warning: ", fg="yellow") + (
        f"the model predicts {split.one_class!r} for every test row: it has learned no rule beyond the majority "
        "class; try --metric f1 or balanced_accuracy, more rows or a longer search")]
    return "\n".join([title] + [f"  {k:<9} {v}" for k, v in rows] + warn)


def _validated(search) -> list[tuple[str, str]]:
    """The summary's line on how trials were validated and what the shipped model was fitted on (none for a
    manifest from before edgeml recorded it)."""
    v, refit = search.validation, search.refit
    if v is None or refit is None:
        return []
    how = (f"{v.folds}-fold {'stratified ' if v.stratified else ''}cross-validation over {v.rows:,} rows"
           if v.method == "cv" else f"holdout of {v.rows:,} rows")
    fitted = (f"refitted on all {refit.rows:,} labelled rows after evaluation (--refit-all; the test metrics "
              "below are the refitted model's, search.refit holds those measured before)" if refit.all_rows
              else f"shipped model fitted on {refit.rows:,} train+validation rows")
    return [("validated", f"{how}; {fitted}")]


def _dimensions(config: dict) -> list[tuple[str, str]]:
    """The summary's lines on edgeml's search dimensions (:mod:`edgeml.models.dimensions`) the chosen model used.

    >>> _dimensions({"target_transform": "log1p", "class_weight": "none"})[0][1][:38]
    'learnt on a log scale: log1p(label), m'
    """
    rows = []
    if config.get("target_transform") == "log1p":
        rows.append(("scale", "learnt on a log scale: log1p(label), mapped back with expm1 in every artifact "
                              "(search dimension target_transform)"))
    if config.get("class_weight") == "balanced":
        rows.append(("weights", "fitted with balanced class weights (search dimension class_weight; they change "
                                "the fit only, not the model)"))
    return rows


def _secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:,.0f} s"
