"""The ``build`` trigger's work: build a challenger on all but the most recent rows, and let it face the champion.

:func:`retrain_by_build` reads the ``[retrain]`` table's source afresh
(:func:`edgeml.data.ingest.read_table`: a file, or a database URL with a table
or ``query``), holds out its most recent labelled rows
(:func:`edgeml.fleet.scoring.recent_split`), builds the challenger from the
older ones through :func:`edgeml.build.build` exactly as ``edgeml build``
would, and scores it and the fleet's champion on exactly the held-out rows
(:func:`edgeml.fleet.scoring.score_bundle`). The challenger is registered
either way (:func:`edgeml.fleet.versions.register`, action ``trained``); it is
promoted only when it beats the champion by more than ``[promotion] margin``
and fits the budgets of the fleet's target, else marked rejected with both
scores and the rows' range. ``[promotion]`` is :class:`Promotion`:

>>> Promotion.from_table({"recent_share": 0.25, "margin": 0.01}, "fleet.toml")
Promotion(recent_share=0.25, margin=0.01, metric=None)
>>> Promotion.from_table({"recent_shares": 0.25}, "fleet.toml")
Traceback (most recent call last):
...
edgeml.errors.FleetError: fleet.toml: [promotion] recent_shares is not a key of [promotion]; did you mean \
'recent_share'? Its keys are recent_share, margin, metric
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgeml.errors import ConfigError, DataError, FleetError

from .scoring import METRICS_HIGHER, better, comparison_metric, recent_split, score_bundle

#: Keys of [retrain] the build trigger sets itself: the rows are the older ones, the bundle goes to the workdir.
SET_BY_TRIGGER = {"out": "the challenger is written under the retrain's work folder",
                  "force": "the challenger is written to a folder of its own"}


@dataclass(frozen=True)
class Promotion:
    """The [promotion] table of fleet.toml."""

    recent_share: float = 0.2  #: the most recent labelled rows held out to compare on (by time column, else file order)
    margin: float = 0.0  #: the challenger must beat the champion by more than this (in the metric's units)
    metric: str | None = None  #: default: the metric the champion's bundle was built for

    def __post_init__(self):
        share, margin = self.recent_share, self.margin
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise FleetError(f"[promotion] recent_share = {share!r}: give the share of the most recent labelled "
                             "rows to hold out, a number between 0 and 1 (exclusive), e.g. 0.2")
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not margin >= 0:
            raise FleetError(f"[promotion] margin = {margin!r}: give how much better the challenger must score, "
                             "a number >= 0 in the metric's units, e.g. 0.01")
        if self.metric is not None and self.metric not in METRICS_HIGHER:
            raise FleetError(f"[promotion] metric = {self.metric!r} is not a metric champion and challenger are "
                             f"compared on; use one of {', '.join(METRICS_HIGHER)}, or leave it out for the "
                             "champion's own")

    @classmethod
    def from_table(cls, table: Mapping, source: str) -> Promotion:
        """The table's keys checked: unknown keys and bad values are :class:`FleetError` naming ``source``."""
        known = [f.name for f in fields(cls)]
        for key in table:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ";"
                raise FleetError(f"{source}: [promotion] {key} is not a key of [promotion]{hint} Its keys are "
                                 f"{', '.join(known)}")
        try:
            return cls(**dict(table))
        except FleetError as exc:
            raise FleetError(f"{source}: {exc}") from None


def retrain_by_build(store_url: str, *, fleet: str, cohort: str, build: Mapping, promotion: Promotion,
                     lineage: Mapping, source: str, workdir: str, tracking=None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Build a challenger from the [retrain] table `build` (same keys as [build] of edgeml.toml, checked the same
    way) on the source read afresh minus its most recent rows, score champion and challenger on exactly those
    rows, register the challenger (versions.register(action="trained", lineage=...)) and promote or reject it.
    Returns a JSON-ready dict: {"status": "promoted" | "rejected", "reason": str, "metric": str, "margin": float,
    "challenger": {"version", "bundle_sha256", "score"}, "champion": {"version", "bundle_sha256", "score"} | None,
    "rows": {"recent", "older", "by", "first", "last"}, "data": {"source", "sha256", "rows"}}.
    Raises an edgeml.errors.EdgeMLError subclass (message says what and how to fix) on failure."""
    from edgeml.data.ingest import read_table

    from . import versions
    from .store import Store

    say = progress or (lambda text: None)
    settings = retrain_settings(build, source)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgeml-retrain-"))
    work.mkdir(parents=True, exist_ok=True)
    table = read_table(settings["data"], query=settings.get("query"))
    split = recent_split(table.frame, settings["label"], promotion.recent_share, settings.get("time_column"))
    say(f"{table.rows:,} rows from {table.source}: {len(split.recent):,} recent (by {split.by}, {split.first} to "
        f"{split.last}) held out, {len(split.older):,} older to train on")
    with tempfile.TemporaryDirectory(prefix="champion-", dir=work) as kept:
        with Store.open(store_url) as store:  # not held open through the build, which may take an hour
            champion = versions.champion(store, fleet, cohort)
            held = _champion_model(store, champion, kept)
            made = versions.versions(store, fleet)
        name = settings.get("name") or (held.manifest.name if held else _default_name(table.source))
        built = _build(settings, split, work, name, _next_version(made, name), say)
        contest = _contest(_load(built.bundle_dir), held, champion, split, settings["label"], promotion)
    data = {"source": table.source, "sha256": table.sha256, "rows": table.rows,
            "labelled": table.rows - split.unlabelled, "format": table.format}
    with Store.open(store_url) as store:
        now = versions.champion(store, fleet, cohort)
        if _number(now) != _number(champion):
            contest = contest.lost(f"the champion changed during the retrain (version {_number(champion)} to "
                                   f"{_number(now)}): the challenger was compared with the one before; retrain "
                                   "again to compare it with the new one")
        version = _record(store, versions, built.bundle_dir, fleet, cohort, contest, {
            **dict(lineage), "data": {**data, "recent": split.to_dict()},
            "parent": None if champion is None else {"version": champion.version,
                                                      "bundle_sha256": champion.bundle_sha256}}, tracking)
    say(f"challenger version {version.version} {contest.status}: {contest.reason}")
    mine, theirs = contest.scores["challenger"], contest.scores["champion"]
    return {"status": contest.status, "reason": contest.reason, "metric": contest.metric, "margin": promotion.margin,
            "challenger": {"version": version.version, "bundle_sha256": version.bundle_sha256, "score": mine.value,
                           "failed_rows": mine.failed},
            "champion": None if champion is None else {
                "version": champion.version, "bundle_sha256": champion.bundle_sha256, "score": theirs.value,
                "failed_rows": theirs.failed},
            "rows": split.to_dict(), "data": data, "budgets": {"within": not contest.over, "broken": contest.over}}


@dataclass(frozen=True)
class Contest:
    """Champion against challenger on the recent rows: the verdict, why, and what it was judged on."""

    status: str
    reason: str
    metric: str
    chosen_by: str
    scores: dict  #: ``challenger`` and ``champion`` (None without one): :class:`~edgeml.fleet.scoring.Score`
    gain: float | None
    margin: float
    over: list  #: the fleet target's budgets the challenger breaks

    def lost(self, reason: str) -> Contest:
        return replace(self, status="rejected", reason=reason)

    def lineage(self) -> dict:
        return {"scores": {k: (s.to_dict() if s else None) for k, s in self.scores.items()}, "metric": self.metric,
                "metric_chosen_by": self.chosen_by, "margin": self.margin, "gain": self.gain,
                "budgets": {"within": not self.over, "broken": self.over}}


def _contest(challenger, held, champion, split, label: str, promotion: Promotion) -> Contest:
    """Both bundles scored on exactly the recent rows with one metric, and the verdict."""
    if held is not None and held.task != challenger.task:
        raise FleetError(f"the champion (version {champion.version}) is a {held.task} bundle and the challenger a "
                         f"{challenger.task} one: check [retrain] label and task")
    metric, chosen_by = comparison_metric(challenger.task, promotion.metric,
                                          (held or challenger).manifest.search.metric)
    classes = _classes(held, challenger)
    scores = {"challenger": score_bundle(challenger, split.recent, label, metric, classes),
              "champion": score_bundle(held, split.recent, label, metric, classes) if held else None}
    over = over_budget(challenger.manifest, (held or challenger).manifest)
    won, gain = better(scores["challenger"], scores["champion"], promotion.margin)
    status, reason = _verdict(won, gain, over, scores, promotion.margin, champion, metric)
    return Contest(status, reason, metric, chosen_by, scores, gain, promotion.margin, over)


def _record(store, versions, bundle_dir, fleet: str, cohort: str, contest: Contest, lineage: dict, tracking):
    """The challenger registered (action ``trained``) with its lineage, then promoted or rejected."""
    extra = {} if tracking is None else {"tracking": tracking}
    parent = lineage["parent"]["bundle_sha256"] if lineage["parent"] else None
    made = versions.register(store, bundle_dir, fleet=fleet, cohort=cohort, action="trained", status="candidate",
                             lineage={**lineage, **contest.lineage()}, parent=parent, **extra)
    if contest.status == "promoted":
        return versions.promote(store, made.version, reason=contest.reason, **extra)
    evidence = contest.lineage()
    return versions.reject(store, made.version, reason=contest.reason, scores=evidence["scores"],
                           metric=contest.metric, gain=contest.gain, broken=contest.over,
                           rows=lineage["data"]["recent"], **extra)


def _number(version) -> str:
    return "none" if version is None else str(version.version)


def retrain_settings(build: Mapping, source: str) -> dict:
    """The [retrain] table's keys checked as edgeml.config checks [build] (unknown keys and wrong types named);
    the keys the trigger sets itself, and a missing ``data`` or ``label``, refused."""
    from edgeml import config

    for key, why in SET_BY_TRIGGER.items():
        if key in build:
            raise FleetError(f"{source}: [retrain] {key} is set by the build trigger ({why}); leave it out")
    try:
        checked = config.read_build_table(Path(source), "retrain", dict(build))
    except ConfigError as exc:
        said = re.sub(r"\(set (it|them) with the --[\w-]+ flag or (\w+) in edgeml\.toml's \[build\] table\)",
                      lambda m: f"(set {m[2]} in [retrain] of {source})", str(exc))
        raise FleetError(said) from None
    for key, example in (("data", '"/var/lib/edgeml/labelled.csv"'), ("label", '"failure"')):
        if not checked.get(key):
            raise FleetError(f"{source}: [retrain] {key} is missing: the build trigger needs it; e.g. "
                             f"{key} = {example}")
    return checked


def over_budget(challenger, fleet) -> list[str]:
    """The budgets of ``fleet``'s target (the champion's manifest, or the challenger's own with none) that the
    challenger's shipped model breaks, as its search record states its cost; empty when it fits them all."""
    budgets, target, search = fleet.target.budgets, fleet.target.name, challenger.search
    own = challenger.target.budgets
    out = []
    formats = {a.format for a in challenger.artifacts}
    if not formats & set(fleet.target.formats):
        out.append(f"formats: it ships {', '.join(sorted(formats))}, and target {target!r} runs "
                   f"{', '.join(fleet.target.formats)}")
    limit, cost = budgets.max_model_bytes, search.best_model_bytes
    runnable = sorted((a for a in challenger.artifacts if a.format in fleet.target.formats), key=lambda a: a.bytes)
    if limit is not None and (cost is None or cost > limit):
        out.append(f"max_model_bytes: the model ({_shown(cost, 'bytes')}) is over target {target!r}'s {limit:,}")
    elif limit is not None and runnable and runnable[0].bytes > limit:  # the artifact holds the preprocessing too
        out.append(f"max_model_bytes: {runnable[0].path}, {runnable[0].bytes:,} bytes with its preprocessing, is "
                   f"over target {target!r}'s {limit:,}")
    latency = search.best_predicted_latency_ms
    if latency is not None and own.speed_factor and budgets.speed_factor:
        latency = latency * budgets.speed_factor / own.speed_factor  # on the fleet's target, not the build's
    if budgets.latency_budget_ms is not None and (latency is None or latency > budgets.latency_budget_ms):
        out.append(f"latency_budget_ms: the model ({_shown(latency, 'ms predicted')}) is over target {target!r}'s "
                   f"{budgets.latency_budget_ms:g}")
    arena = _arena(search)
    if budgets.max_arena_bytes is not None and (arena is None or arena > budgets.max_arena_bytes):
        out.append(f"max_arena_bytes: the model ({_shown(arena, 'bytes of arena')}) is over target {target!r}'s "
                   f"{budgets.max_arena_bytes:,}")
    return out


def _shown(value, unit: str) -> str:
    if value is None:
        return "not stated in its search record"
    return f"{value:,.4g} {unit}" if isinstance(value, float) else f"{value:,} {unit}"


def _arena(search) -> int | None:
    """The shipped model's tensor arena, as its search measured it (the frontier check's, else its trial's)."""
    check = search.frontier_check
    if check is not None and check.shipped is not None:
        shipped = [c for c in check.candidates if c.iteration == check.shipped]
        if shipped:
            return shipped[0].measured.arena_bytes
    trials = [t for t in search.trial_log if t.learner == search.best_learner and t.loss == search.best_valid_loss]
    return trials[0].arena_bytes if trials else None


def _verdict(won: bool, gain, over: list[str], scores: dict, margin: float, champion, metric: str):
    mine, theirs = scores["challenger"], scores["champion"]
    failed = "".join(f"; the {who} could not score {s.failed} of the rows (counted against it)"
                     for who, s in scores.items() if s is not None and s.failed)
    if over:
        return "rejected", f"over the fleet target's budgets: {'; '.join(over)}{failed}"
    if theirs is None:
        return "promoted", f"there was no champion; the challenger scores {metric} {mine.value:.4g}{failed}"
    versus = (f"{metric} {mine.value:.4g} against the champion's (version {champion.version}) {theirs.value:.4g} on "
              f"the same {mine.rows:,} recent rows")
    if won:
        return "promoted", f"better by {gain:.4g} (margin {margin:g}): {versus}{failed}"
    return "rejected", f"not better by more than the margin {margin:g} (by {gain:.4g}): {versus}{failed}"


def _champion_model(store, champion, folder: str):
    """The champion's bundle, from the registry's archive, loaded for scoring; None without a champion."""
    if champion is None:
        return None
    from . import versions

    return _load(versions.archive_path(store, champion.bundle_sha256, folder))


def _load(path):
    from edgeml_runtime import Model

    return Model.load(path)


def _classes(champion, challenger) -> tuple:
    """The labels both bundles are scored over: the champion's, then any only the challenger knows."""
    first = tuple(champion.classes) if champion is not None else ()
    return first + tuple(c for c in challenger.classes if c not in first)


def _default_name(data: str) -> str:
    from edgeml.bundle.naming import default_name

    return default_name(data)


def _next_version(made, name: str) -> int:
    """One past the highest version number of a bundle called ``name`` the fleet's registry holds."""
    numbers = [int(v.bundle_version) for v in made if v.name == name and v.bundle_version.isdigit()]
    return max(numbers, default=0) + 1


def _build(settings: dict, split, work: Path, name: str, version: int, say):
    """The challenger built from the older rows, kept as Parquet so their types are the source's own."""
    import pyarrow as pa

    from edgeml.build import Reporter, build
    from edgeml.config import BuildConfig

    rows = work / "older-rows.parquet"
    try:
        split.older.to_parquet(rows, index=False)
    except (pa.ArrowException, ValueError) as exc:
        raise DataError(f"the older rows cannot be kept for the build ({exc}); a column mixes numbers and text: "
                        "give it one type in the source") from exc

    class Progress(Reporter):
        def stage(self, name: str, detail: str) -> None:
            say(f"build {name}: {detail}")

    out = work / f"{name}-{version}"
    if out.exists():
        shutil.rmtree(out)
    fields_ = {k: v for k, v in settings.items() if k not in ("data", "query", "name")}
    return build(BuildConfig(**fields_, data=str(rows), name=name, out=str(out)), Progress())


__all__ = ["Promotion", "over_budget", "retrain_by_build", "retrain_settings"]
