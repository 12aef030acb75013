"""The search stage: FLAML over the target's learners, every trial judged on the target's budgets."""

from edgeml.search.automl import SearchResult, SearchSettings, run_search, usable_learners
from edgeml.search.trials import HardwareBudget, Trial

__all__ = ["HardwareBudget", "SearchResult", "SearchSettings", "Trial", "run_search", "usable_learners"]
