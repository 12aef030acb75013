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
    """What every trial's model must fit in on the target, and how fast the target is compared with this machine.

    ``None`` means no limit. ``n_inputs`` is the number of raw inputs the
    exported graph takes (the runtime pays per input); by default the width
    of the training matrix.

    >>> b = HardwareBudget(max_model_bytes=1000, latency_budget_ms=1.0)
    >>> b.broken(Cost(model_bytes=1500, latency_ms=0.5))
    ('max_model_bytes',)
    >>> b.excess(Cost(model_bytes=1500, latency_ms=0.5))
    0.5
    """

    max_model_bytes: int | None = None
    latency_budget_ms: float | None = None
    speed_factor: float = 1.0
    n_inputs: int | None = None
    max_arena_bytes: int | None = None
    #: For a target whose preferred format is TFLite: the precisions to measure a trial at, in order (the first
    #: one the model exports at counts), and the operator set it must map to ("" for every builtin).
    tflite_precisions: tuple[str, ...] = ()
    tflite_ops: str = ""
    #: (precision, bytes) pairs: what the data set's preprocessing and metadata add to every model's TFLite file.
    tflite_overhead_bytes: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_target(cls, target, n_inputs: int | None = None) -> HardwareBudget:
        """The budgets of a :class:`~edgeml.targets.profiles.TargetProfile`."""
        b = target.budgets
        tflite = target.formats[0] == "tflite"
        return cls(b.max_model_bytes, b.latency_budget_ms, b.speed_factor or 1.0, n_inputs, b.max_arena_bytes,
                   tuple(target.precisions) if tflite else (), target.tflite_ops if tflite else "")

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
    lower is better); ``model_bytes``, ``latency_ms``, ``arena_bytes`` and
    ``unmapped`` its :class:`Cost` on the target (``None`` when the search had
    no measuring function), ``broken`` the budgets it breaks and ``feasible``
    whether it breaks none.
    """

    iteration: int
    learner: str
    elapsed: float
    best_loss: float | None
    best_learner: str | None
    config: dict | None = None
    loss: float | None = None
    model_bytes: int | None = None
    latency_ms: float | None = None
    feasible: bool | None = None
    broken: tuple[str, ...] = ()
    arena_bytes: int | None = None
    unmapped: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready, for the bundle's manifest."""
        d = {
            "iteration": self.iteration, "learner": self.learner, "elapsed": round(self.elapsed, 3),
            "config": _plain(self.config), "loss": _finite(self.loss), "model_bytes": self.model_bytes,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 6),
            "feasible": self.feasible, "broken": list(self.broken),
        }
        if self.arena_bytes is not None:
            d["arena_bytes"] = self.arena_bytes
        if self.unmapped:
            d["unmapped"] = list(self.unmapped)
        return d


def frontier(trials) -> list[Trial]:
    """The trials no other trial beats on validation loss, model size and target latency together.

    A trial is on the frontier when no other trial is at least as good on
    all three and better on one: for each size and latency, the best loss
    there is. Sorted by size, then latency. Infeasible trials are included
    (marked as such): they show what a bigger device would gain.

    >>> t = lambda i, loss, size, ms: Trial(i, "lgbm", 0.0, None, None, loss=loss, model_bytes=size, latency_ms=ms)
    >>> [x.iteration for x in frontier([t(0, 0.10, 100, 1.0), t(1, 0.20, 200, 1.0), t(2, 0.05, 300, 2.0)])]
    [0, 2]
    """
    measured = [t for t in trials if t.loss is not None and np.isfinite(t.loss) and t.model_bytes is not None
                and t.latency_ms is not None]

    def beats(a: Trial, b: Trial) -> bool:
        key_a, key_b = (a.loss, a.model_bytes, a.latency_ms), (b.loss, b.model_bytes, b.latency_ms)
        return all(x <= y for x, y in zip(key_a, key_b, strict=False)) and key_a != key_b

    front, seen = [], set()
    for t in measured:
        key = (t.loss, t.model_bytes, t.latency_ms)
        if key not in seen and not any(beats(o, t) for o in measured):
            front.append(t)
            seen.add(key)
    return sorted(front, key=lambda t: (t.model_bytes, t.latency_ms, t.loss))


def infeasible_message(trials, budget: HardwareBudget) -> str:
    """Which budget every trial broke, and the least change to a budget that would admit one of them."""
    measured = [t for t in trials if t.model_bytes is not None]
    lines = [f"no model fits the target's budgets: all {len(measured)} trial(s) broke at least one"]
    unmapped = [t for t in measured if "tflite_ops" in t.broken]
    if unmapped:
        by_learner = sorted({t.learner for t in unmapped})
        lines.append(f"  tflite_ops = {budget.tflite_ops or 'all builtins'!r}: {len(unmapped)} trial(s) "
                     f"({', '.join(by_learner)}) cannot be written for it: {unmapped[0].unmapped[0]}")
    limits = {"max_model_bytes": budget.max_model_bytes, "latency_budget_ms": budget.latency_budget_ms,
              "max_arena_bytes": budget.max_arena_bytes}
    value = {"max_model_bytes": lambda t: t.model_bytes, "latency_budget_ms": lambda t: t.latency_ms,
             "max_arena_bytes": lambda t: t.arena_bytes}
    unit = {"max_model_bytes": lambda v: f"{v:,} bytes", "latency_budget_ms": lambda v: f"{v:.3g} ms",
            "max_arena_bytes": lambda v: f"{v:,} bytes"}
    for name in limits:
        broke = [t for t in measured if name in t.broken]
        if broke:
            best = min(value[name](t) for t in broke)
            lines.append(f"  budgets.{name} = {limits[name]:,}: broken by {len(broke)} trial(s); "
                         f"the {'fastest' if name == 'latency_budget_ms' else 'smallest'} was {unit[name](best)}"
                         + (f" (predicted at speed_factor {budget.speed_factor:g})"
                            if name == "latency_budget_ms" else ""))
    fixes = []
    for name in limits:
        others = [t for t in measured if name in t.broken and set(t.broken) == {name}]
        if others:
            t = min(others, key=lambda t: value[name](t))
            new = value[name](t)
            shown = _round_up(new) if name == "latency_budget_ms" else f"{int(new):_}"
            fixes.append(f"raise budgets.{name} to {shown} (admits {t.learner}, validation loss {t.loss:.4g})")
    if not fixes and unmapped:
        fixes.append("allow only model families that map to the operator set (lrl1, lrl2, enet, mlp)")
    if not fixes:
        fixes.append("raise several budgets: no trial fits with one alone")
    lines.append("To relax: " + "; or ".join(fixes) + ". Or allow smaller model families in the profile's "
                 "estimators (lrl1, lrl2, enet, mlp), or a lower speed_factor if it was measured on the device.")
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


__all__ = ["BUDGETS", "INFEASIBLE", "Cost", "HardwareBudget", "Trial", "frontier", "infeasible_message"]
