"""The trials of a hardware-aware search: what a trial costs, the budgets that judge it, the frontier, why nothing fit.

Plain values only: a measuring function (:mod:`edgeml.targets.measure`) turns
each trial's model into a :class:`Cost`, a :class:`HardwareBudget` judges it,
:mod:`edgeml.search.automl` records a :class:`Trial` per judged model; the build
stores them in the manifest and prints the frontier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeml.models.families import FAMILIES
from edgeml.models.learners import LEARNERS

#: The budgets a trial is judged on, as named in a target profile's ``[budgets]`` table (``tflite_ops``: the
#: profile's operator set, for a target that runs TFLite).
BUDGETS = ("max_model_bytes", "latency_budget_ms", "max_arena_bytes", "tflite_ops")
#: Added to the objective FLAML sees for a trial that breaks a budget: beyond any real validation loss.
INFEASIBLE = 1e12


@dataclass(frozen=True)
class Cost:
    """What one model costs on the target, as measured: its size, predicted one-row latency, tensor memory, and
    what keeps it off the target's operator set.

    ``arena_bytes`` is ``None`` where nothing was measured (a target that does
    not run TFLite); ``unmapped`` is empty when the model maps.

    >>> Cost(model_bytes=1200, latency_ms=0.25)
    Cost(model_bytes=1200, latency_ms=0.25, arena_bytes=None, unmapped=())
    >>> Cost(model_bytes=-1, latency_ms=0.25)
    Traceback (most recent call last):
    ...
    ValueError: Cost.model_bytes must be a whole number of bytes >= 0, got -1
    """

    model_bytes: int
    latency_ms: float
    arena_bytes: int | None = None
    unmapped: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.model_bytes, bool) or not isinstance(self.model_bytes, (int, np.integer)) \
                or self.model_bytes < 0:
            raise ValueError(f"Cost.model_bytes must be a whole number of bytes >= 0, got {self.model_bytes!r}")
        if not isinstance(self.latency_ms, (int, float, np.floating)) or not math.isfinite(self.latency_ms) \
                or self.latency_ms < 0:
            raise ValueError(f"Cost.latency_ms must be a finite number of milliseconds >= 0, got {self.latency_ms!r}")
        if self.arena_bytes is not None and (not isinstance(self.arena_bytes, (int, np.integer))
                                             or self.arena_bytes < 0):
            raise ValueError(f"Cost.arena_bytes must be None or a whole number of bytes >= 0, got "
                             f"{self.arena_bytes!r}")
        if not isinstance(self.unmapped, tuple) or not all(isinstance(u, str) for u in self.unmapped):
            raise ValueError(f"Cost.unmapped must be a tuple of reasons (strings), got {self.unmapped!r}")


@dataclass(frozen=True)
class HardwareBudget:
    """What every trial's model must fit in on the target: limits only, ``None`` (or ``""``) meaning no limit.

    ``tflite_ops`` names the operator set a TFLite model must map to. How a
    model is measured (the target's speed, its TFLite precisions) is the
    measuring function's business (:class:`edgeml.targets.measure.TrialMeasure`).

    >>> b = HardwareBudget(max_model_bytes=1000, latency_budget_ms=1.0)
    >>> b.broken(Cost(model_bytes=1500, latency_ms=0.5))
    ('max_model_bytes',)
    >>> b.excess(Cost(model_bytes=1500, latency_ms=0.5))
    0.5
    """

    max_model_bytes: int | None = None
    latency_budget_ms: float | None = None
    max_arena_bytes: int | None = None
    tflite_ops: str = ""

    @property
    def limits(self) -> tuple[str, ...]:
        """The budgets that limit something (:data:`BUDGETS` that are set)."""
        set_ = {"max_model_bytes": self.max_model_bytes, "latency_budget_ms": self.latency_budget_ms,
                "max_arena_bytes": self.max_arena_bytes, "tflite_ops": self.tflite_ops or None}
        return tuple(k for k in BUDGETS if set_[k] is not None)

    def broken(self, cost: Cost) -> tuple[str, ...]:
        """The budgets a model of this :class:`Cost` breaks, in the order of :data:`BUDGETS`."""
        out = []
        if self.max_model_bytes is not None and cost.model_bytes > self.max_model_bytes:
            out.append("max_model_bytes")
        if self.latency_budget_ms is not None and cost.latency_ms > self.latency_budget_ms:
            out.append("latency_budget_ms")
        if self.max_arena_bytes is not None and cost.arena_bytes is not None \
                and cost.arena_bytes > self.max_arena_bytes:
            out.append("max_arena_bytes")
        if cost.unmapped:
            out.append("tflite_ops")
        return tuple(out)

    def excess(self, cost: Cost) -> float:
        """How far over its budgets a model of this :class:`Cost` is: the sum of the relative overruns, plus 1
        when it does not map to the operator set (0 when it fits)."""
        over = 0.0
        if self.max_model_bytes is not None:
            over += max(0.0, cost.model_bytes / self.max_model_bytes - 1)
        if self.latency_budget_ms is not None:
            over += max(0.0, cost.latency_ms / self.latency_budget_ms - 1)
        if self.max_arena_bytes is not None and cost.arena_bytes is not None:
            over += max(0.0, cost.arena_bytes / self.max_arena_bytes - 1)
        return over + (1.0 if cost.unmapped else 0.0)


@dataclass(frozen=True)
class Trial:
    """One step of the search, recorded by the search's own judge when FLAML had it score a fitted model.

    ``iteration`` counts the judged models from 0; ``elapsed`` is the wall-clock
    time since the search began. ``best_loss`` and ``best_learner`` are the best
    validation loss among the trials so far that fit the budgets (``None``
    until one does). ``loss`` is this trial's own validation loss (FLAML's,
    lower is better); ``cost`` its :class:`Cost` on the target (``None`` when
    the search had no measuring function), ``broken`` the budgets it breaks
    and ``feasible`` whether it breaks none. ``failure`` says why a trial
    has no loss (its learner could not fit the data, or its model could not
    be scored): such a trial is never chosen, and is not measured.

    >>> t = Trial(0, "lgbm", 0.5, 0.1, "lgbm", loss=0.1, cost=Cost(1200, 0.25), feasible=True)
    >>> {k: t.to_dict()[k] for k in ("model_bytes", "latency_ms", "broken")}
    {'model_bytes': 1200, 'latency_ms': 0.25, 'broken': []}
    """

    iteration: int
    learner: str
    elapsed: float
    best_loss: float | None
    best_learner: str | None
    config: dict | None = None
    loss: float | None = None
    cost: Cost | None = None
    feasible: bool | None = None
    broken: tuple[str, ...] = ()
    failure: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready, for the bundle's manifest: the cost's fields flat beside the trial's own."""
        cost = self.cost
        d = {
            "iteration": self.iteration, "learner": self.learner, "elapsed": round(self.elapsed, 3),
            "config": _plain(self.config), "loss": _finite(self.loss),
            "model_bytes": None if cost is None else cost.model_bytes,
            "latency_ms": None if cost is None else round(cost.latency_ms, 6),
            "feasible": self.feasible, "broken": list(self.broken),
        }
        if cost is not None and cost.arena_bytes is not None:
            d["arena_bytes"] = cost.arena_bytes
        if cost is not None and cost.unmapped:
            d["unmapped"] = list(cost.unmapped)
        return d


def frontier(trials) -> list[Trial]:
    """The trials no other trial beats on validation loss, model size and target latency together.

    A trial is on the frontier when no other trial is at least as good on
    all three and better on one: for each size and latency, the best loss
    there is. Sorted by size, then latency. Infeasible trials are included
    (marked as such): they show what a bigger device would gain.

    >>> def t(i, loss, size, ms):
    ...     return Trial(i, "lgbm", 0.0, None, None, loss=loss, cost=Cost(size, ms))
    >>> [x.iteration for x in frontier([t(0, 0.10, 100, 1.0), t(1, 0.20, 200, 1.0), t(2, 0.05, 300, 2.0)])]
    [0, 2]
    """
    measured = [t for t in trials if t.loss is not None and np.isfinite(t.loss) and t.cost is not None]

    def key(t: Trial) -> tuple[float, int, float]:
        return t.loss, t.cost.model_bytes, t.cost.latency_ms

    def beats(a: Trial, b: Trial) -> bool:
        return all(x <= y for x, y in zip(key(a), key(b), strict=True)) and key(a) != key(b)

    front, seen = [], set()
    for t in measured:
        if key(t) not in seen and not any(beats(o, t) for o in measured):
            front.append(t)
            seen.add(key(t))
    return sorted(front, key=lambda t: (t.cost.model_bytes, t.cost.latency_ms, t.loss))


def candidates(trials) -> list[Trial]:
    """The trials a search may ship, best first: the frontier of the trials that fit (by the cost the search
    saw), ordered by validation loss, then size.

    >>> def t(i, loss, size, feasible=True):
    ...     return Trial(i, "lgbm", 0.0, None, None, loss=loss, cost=Cost(size, 1.0), feasible=feasible)
    >>> [x.iteration for x in candidates([t(0, 0.2, 100), t(1, 0.1, 300), t(2, 0.05, 50, False), t(3, 0.3, 200)])]
    [1, 0]
    """
    return sorted(frontier([t for t in trials if t.feasible]), key=lambda t: (t.loss, t.cost.model_bytes))


@dataclass(frozen=True)
class Candidate:
    """A frontier candidate after the search: its trial, and its model refitted on train+validation, exported for
    real (``measured``) and, where the search predicted costs, predicted the same way (``predicted``: the
    predictor's error on the frontier is the difference). ``broken``: the budgets ``measured`` breaks."""

    trial: Trial
    measured: Cost
    predicted: Cost | None = None
    broken: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        def cost(c: Cost | None) -> dict | None:
            return None if c is None else {"model_bytes": c.model_bytes, "arena_bytes": c.arena_bytes,
                                           "unmapped": list(c.unmapped)}

        return {"iteration": self.trial.iteration, "learner": self.trial.learner, "loss": _finite(self.trial.loss),
                "predicted": cost(self.predicted), "measured": cost(self.measured), "broken": list(self.broken)}


@dataclass(frozen=True)
class FrontierCheck:
    """What the search did after its trials: the candidates exported for real, best first, until one fit (the last
    one, unless none did); ``trial_costs`` says whether the trials' costs were ``predicted`` or ``measured``.

    >>> def cand(i, size, predicted, broken=()):
    ...     trial = Trial(i, "rf", 0.0, None, None, loss=0.1 * (i + 1), cost=Cost(predicted, 1.0), feasible=True)
    ...     return Candidate(trial, Cost(size, 1.0), Cost(predicted, 1.0), broken)
    >>> check = FrontierCheck("predicted", (cand(4, 1100, 1000, ("max_model_bytes",)), cand(2, 900, 880)))
    >>> check.fallback
    'trial 5 (rf) broke max_model_bytes when exported (1,100 bytes; predicted 1,000); trial 3 (rf) ships instead'
    >>> check.summary()
    'frontier check: 2 candidate(s) exported (trial costs predicted), size error up to 9% (mean 5.7%); trial 5 \
(rf) broke max_model_bytes when exported (1,100 bytes; predicted 1,000); trial 3 (rf) ships instead'
    """

    trial_costs: str
    candidates: tuple[Candidate, ...]

    @property
    def shipped(self) -> Candidate | None:
        last = self.candidates[-1] if self.candidates else None
        return last if last is not None and not last.broken else None

    @property
    def fallback(self) -> str | None:
        """Why the best candidate does not ship (``None`` when it does)."""
        if not self.candidates or self.candidates[0] is self.shipped:
            return None
        first = self.candidates[0]
        shown = f"{first.measured.model_bytes:,} bytes"
        if first.measured.arena_bytes is not None:
            shown += f", arena {first.measured.arena_bytes:,}"
        if first.predicted is not None:
            shown += f"; predicted {first.predicted.model_bytes:,}"
            if first.predicted.arena_bytes is not None and first.measured.arena_bytes is not None:
                shown += f", arena {first.predicted.arena_bytes:,}"
        then = (f"trial {self.shipped.trial.iteration + 1} ({self.shipped.trial.learner}) ships instead"
                if self.shipped is not None else "no candidate fits")
        return (f"trial {first.trial.iteration + 1} ({first.trial.learner}) broke {', '.join(first.broken)} when "
                f"exported ({shown}); {then}")

    def errors(self) -> dict[str, list[float]]:
        """The predictor's relative errors on the candidates, ``(predicted - measured) / measured``, per cost."""
        out: dict[str, list[float]] = {"model_bytes": [], "arena_bytes": []}
        for c in self.candidates:
            if c.predicted is None:
                continue
            for name in out:
                p, m = getattr(c.predicted, name), getattr(c.measured, name)
                if p is not None and m:
                    out[name].append((p - m) / m)
        return out

    def summary(self) -> str:
        """One line for the build's summary."""
        size = self.errors()["model_bytes"]
        error = (f", size error up to {max(map(abs, size)):.0%} (mean {np.mean(np.abs(size)):.1%})" if size else "")
        arena = self.errors()["arena_bytes"]
        if arena:
            error += f", arena error up to {max(map(abs, arena)):.0%}"
        line = (f"frontier check: {len(self.candidates)} candidate(s) exported (trial costs {self.trial_costs})"
                + error)
        return line + (f"; {self.fallback}" if self.fallback else "")

    def to_dict(self) -> dict:
        errors = {k: (round(float(max(v, key=abs)), 4) if v else None) for k, v in self.errors().items()}
        return {"trial_costs": self.trial_costs, "candidates": [c.to_dict() for c in self.candidates],
                "shipped": None if self.shipped is None else self.shipped.trial.iteration,
                "fallback": self.fallback, "max_error": errors}


def small_learners() -> tuple[str, ...]:
    """The registered learners whose family is linear or a small neural net: the ones that fit small devices and
    map to integer-only operator sets (read from the registries when asked, so a learner added later counts).

    >>> small_learners()
    ('lrl1', 'lrl2', 'enet', 'mlp')
    """
    return tuple(name for name, learner in LEARNERS.items() if FAMILIES[learner.family].kind in SMALL_KINDS)


#: Model-family kinds (:data:`edgeml.models.families.KINDS`) that are small enough to suggest when nothing fits.
SMALL_KINDS = ("linear", "mlp")
_COST_OF = {"max_model_bytes": lambda c: c.model_bytes, "latency_budget_ms": lambda c: c.latency_ms,
            "max_arena_bytes": lambda c: c.arena_bytes}
_UNIT = {"max_model_bytes": lambda v: f"{v:,} bytes", "latency_budget_ms": lambda v: f"{v:.3g} ms",
         "max_arena_bytes": lambda v: f"{v:,} bytes"}


def failure_message(trials) -> str:
    """Why a search in which every trial failed has no model: the first failure, which the rest most likely share.

    >>> print(failure_message([Trial(0, "enet", 0.1, None, None, failure="fitting raised ValueError: bad y")]))
    no model: all 1 trial(s) failed; the first, trial 1 (enet): fitting raised ValueError: bad y. Fix what it names \
in the data, or allow other learners (--estimators or the target profile's estimators)
    """
    failed = [t for t in trials if t.failure is not None]
    first = failed[0]
    learners = sorted({t.learner for t in failed})
    also = f" ({', '.join(learners)} all failed)" if len(learners) > 1 else ""
    return (f"no model: all {len(failed)} trial(s) failed{also}; the first, trial {first.iteration + 1} "
            f"({first.learner}): {first.failure.rstrip('.')}. Fix what it names in the data, or allow other learners "
            "(--estimators or the target profile's estimators)")


def infeasible_message(trials, budget: HardwareBudget) -> str:
    """Which budget every trial broke, and the least change to a budget that would admit one of them."""
    measured = [t for t in trials if t.cost is not None]
    lines = [f"no model fits the target's budgets: all {len(measured)} trial(s) broke at least one"]
    unmapped = [t for t in measured if "tflite_ops" in t.broken]
    if unmapped:
        by_learner = sorted({t.learner for t in unmapped})
        lines.append(f"  tflite_ops = {budget.tflite_ops or 'all builtins'!r}: {len(unmapped)} trial(s) "
                     f"({', '.join(by_learner)}) cannot be written for it: {unmapped[0].cost.unmapped[0]}")
    limits = {name: getattr(budget, name) for name in _COST_OF}
    for name, value in _COST_OF.items():
        broke = [t for t in measured if name in t.broken]
        if broke:
            best = min(value(t.cost) for t in broke)
            lines.append(f"  budgets.{name} = {limits[name]:,}: broken by {len(broke)} trial(s); "
                         f"the {'fastest' if name == 'latency_budget_ms' else 'smallest'} was {_UNIT[name](best)}"
                         + (" (predicted on the target)" if name == "latency_budget_ms" else ""))
    fixes = []
    for name, value in _COST_OF.items():
        alone = [t for t in measured if set(t.broken) == {name}]
        if alone:
            t = min(alone, key=lambda t: value(t.cost))
            new = value(t.cost)
            shown = _round_up(new) if name == "latency_budget_ms" else f"{int(new):_}"
            fixes.append(f"raise budgets.{name} to {shown} (admits {t.learner}, validation loss {t.loss:.4g})")
    small = ", ".join(small_learners())
    if not fixes and unmapped:
        fixes.append(f"allow only model families that map to the operator set ({small})")
    if not fixes:
        fixes.append("raise several budgets: no trial fits with one alone")
    lines.append("To relax: " + "; or ".join(fixes) + ". Or allow smaller model families in the profile's "
                 f"estimators ({small}), or a lower speed_factor if it was measured on the device.")
    return "\n".join(lines)


def _round_up(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, rounded up (a budget set to it admits ``v``)."""
    step = 10.0 ** (np.floor(np.log10(v)) - digits + 1)
    return f"{np.ceil(v / step - 1e-9) * step:.{digits}g}"


def _finite(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _plain(config):
    if config is None:
        return None
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}


__all__ = ["BUDGETS", "INFEASIBLE", "SMALL_KINDS", "Candidate", "Cost", "FrontierCheck", "HardwareBudget", "Trial",
           "candidates", "failure_message", "frontier", "infeasible_message", "small_learners"]
