"""The search stage: FLAML over the target's learners, every trial measured by the caller's function and judged on
the target's budgets."""

from edgeml.search.automl import Measure, SearchResult, SearchSettings, run_search, usable_learners
from edgeml.search.trials import Cost, HardwareBudget, Trial

__all__ = ["Cost", "HardwareBudget", "Measure", "SearchResult", "SearchSettings", "Trial", "run_search",
           "usable_learners"]
