"""The manifest's ``search`` subsections on how the chosen model was validated, refitted and checked on the target:
``search.validation``, ``search.refit`` and ``search.frontier_check`` (:class:`~edgeml_runtime.manifest.Search`
holds them; importable from :mod:`edgeml_runtime.manifest` too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .manifest_artifacts import METRICS
from .sections import BOOL, INT, NUMBER, STR, Section, key, list_of, mapping_of, nullable, one_of, section


@dataclass(frozen=True, kw_only=True)
class SearchValidation(Section):
    """``search.validation``: how trials were scored, ``cv`` (``folds`` folds over ``rows`` train+validation rows)
    or ``holdout`` (``rows`` validation rows, ``folds`` 1); edgeml's rule is in docs/search.md."""

    schema_name: ClassVar[str] = "search_validation"
    method: str = key(one_of("cv", "holdout"))
    folds: int = key(INT)
    rows: int = key(INT)
    stratified: bool = key(BOOL)


@dataclass(frozen=True, kw_only=True)
class SearchRefit(Section):
    """``search.refit``: the rows the shipped model was fitted on; with ``all_rows`` (``--refit-all``) the test
    rows too, after evaluation, and ``test_metrics_before_refit`` the honest test metrics, measured before it."""

    schema_name: ClassVar[str] = "search_refit"
    all_rows: bool = key(BOOL)
    rows: int = key(INT)
    metrics_measured_before_refit: bool = key(BOOL)
    test_metrics_before_refit: dict | None = key(nullable(METRICS))


@dataclass(frozen=True, kw_only=True)
class CandidateCost(Section):
    """A frontier candidate's cost, predicted or measured: its TFLite (or ONNX) file's bytes, its arena (``null``
    where none is measured) and what keeps it off the target's operator set."""

    schema_name: ClassVar[str] = "candidate_cost"
    model_bytes: int = key(INT)
    arena_bytes: int | None = key(nullable(INT))
    unmapped: tuple[str, ...] = key(list_of(STR))


@dataclass(frozen=True, kw_only=True)
class SearchCandidate(Section):
    """One of ``search.frontier_check.candidates``: a trial refitted on train+validation, exported for real."""

    schema_name: ClassVar[str] = "search_candidate"
    iteration: int = key(INT)
    learner: str = key(STR)
    loss: float | None = key(nullable(NUMBER))
    predicted: CandidateCost | None = key(nullable(section(CandidateCost)))
    measured: CandidateCost = key(section(CandidateCost))
    broken: tuple[str, ...] = key(list_of(STR))


@dataclass(frozen=True, kw_only=True)
class FrontierCheck(Section):
    """``search.frontier_check``: the frontier candidates exported for real, best first, until one fit (``shipped``,
    its trial's iteration); ``fallback`` says why the best did not ship; ``max_error`` is the predictor's largest
    relative error on them, per cost (``trial_costs`` ``predicted``; ``null`` when trials were measured)."""

    schema_name: ClassVar[str] = "frontier_check"
    trial_costs: str = key(one_of("predicted", "measured"))
    candidates: tuple[SearchCandidate, ...] = key(list_of(section(SearchCandidate)))
    shipped: int | None = key(nullable(INT))
    fallback: str | None = key(nullable(STR))
    max_error: dict = key(mapping_of(nullable(NUMBER)))


__all__ = ["CandidateCost", "FrontierCheck", "SearchCandidate", "SearchRefit", "SearchValidation"]
