"""How the search validates a trial: edgeml's own rule, cross-validation for small tables and a holdout for large ones.

The rule (:func:`choose_validation`) looks at how many labelled rows the
search may learn from — the training and validation splits together; the test
split is never among them, it stays held out for the build's honest metrics and
for judging the reduced-precision artifacts — and, under a time budget, at
what five fits a trial would cost in it:

* under :data:`CV_BELOW_ROWS` (10,000) rows, **5-fold cross-validation** over
  train+validation (stratified folds for classification, shuffled folds for
  regression). On a small table a single 15 % holdout is a few hundred rows at
  most, so one trial's score moves by more than the differences between good
  trials and the search picks by chance; five folds score every row once and
  cost five fits, which small tables afford. k = 5 is the usual compromise:
  each fold trains on 80 % of the rows (close to the shipped model's 100 %)
  and the five scores average out most of the noise of any single holdout;
* from 10,000 rows on, a **holdout**: the validation split (15 % of the
  table, 1,500 rows or more) scores a trial steadily enough, and five fits per
  trial would cut the number of trials a time budget buys by five;
* under ``--time-budget`` (not ``--max-trials``), a **holdout** also when the
  table is too big for the budget: when rows × columns / 0.9 reaches
  :data:`CELLS_PER_HOUR` (10 million) × budget / 1 hour — FLAML's own
  measure of what a budget affords (``SMALL_LARGE_THRES``): five fits a
  trial on 9,500 rows of 4 columns leave 12 trials in 8 s where the holdout
  runs 60, and the better-validated search loses (R² 0.929 against 0.957 on
  ccpp). The same table at 30 s is cross-validated;
* a table split in time order (``--time-column``) always uses the holdout:
  the validation rows come after the training rows, as the future does.

``--validation cv`` or ``holdout`` (``[build] validation``) overrides the
rule, ``--folds`` the number of folds: a long search on a table just under the
threshold may prefer the holdout's five times more trials.

Under ``--max-trials`` a trial count is the budget, so only the rows decide
(FLAML always cross-validates under ``max_iter``). Either way the shipped
model is refitted on train+validation with the chosen configuration.

>>> choose_validation(2604, "classification")
Validation(method='cv', folds=5, rows=2604, stratified=True)
>>> choose_validation(10200, "regression").describe()
'holdout of 1,800 rows'
>>> choose_validation(8133, "regression", columns=4, time_budget=8).describe()
'holdout of 1,435 rows'
>>> choose_validation(8133, "regression", columns=4, time_budget=30).describe()
'5-fold cross-validation over 8,133 rows'
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeml.errors import ConfigError

#: Tables with fewer labelled train+validation rows than this are cross-validated.
CV_BELOW_ROWS = 10_000
#: Under a time budget, tables of rows × columns / 0.9 at or above this many cells per hour of budget are held out.
CELLS_PER_HOUR = 10_000_000
#: The number of cross-validation folds.
FOLDS = 5
METHODS = ("cv", "holdout")


@dataclass(frozen=True)
class Validation:
    """How trials are scored: ``method`` ``"cv"`` (``folds`` folds over ``rows`` rows) or ``"holdout"`` (``rows``
    validation rows, ``folds`` 1).

    >>> Validation("cv", 5, 300, stratified=True).describe()
    '5-fold stratified cross-validation over 300 rows'
    """

    method: str
    folds: int
    rows: int
    stratified: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"validation method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.method == "cv" and self.folds < 2:
            raise ValueError(f"cross-validation needs at least 2 folds, got {self.folds}")

    @property
    def is_cv(self) -> bool:
        return self.method == "cv"

    def describe(self) -> str:
        """For the build's summary: ``"5-fold cross-validation over 2,604 rows"`` or ``"holdout of 1,500 rows"``."""
        if self.is_cv:
            how = "stratified " if self.stratified else ""
            return f"{self.folds}-fold {how}cross-validation over {self.rows:,} rows"
        return f"holdout of {self.rows:,} rows"

    def to_dict(self) -> dict:
        """The manifest's ``search.validation``."""
        return {"method": self.method, "folds": self.folds, "rows": self.rows, "stratified": self.stratified}


def choose_validation(rows: int, task: str, *, valid_rows: int | None = None, in_time_order: bool = False,
                      columns: int | None = None, time_budget: float | None = None, folds: int = FOLDS,
                      cv_below: int = CV_BELOW_ROWS, method: str = "auto") -> Validation:
    """edgeml's rule for ``rows`` labelled train+validation rows (see the module's docstring), or the ``method``
    the user asked for (``--validation cv`` or ``holdout``; ``auto`` is the rule).

    ``valid_rows`` is the validation split's size, the holdout's rows (15/85 of
    ``rows`` when not given). ``columns`` (the encoded matrix's) and
    ``time_budget`` (seconds; ``None`` under a trial count) weigh a table
    against its budget; without either, only the rows decide.

    >>> choose_validation(500, "regression")
    Validation(method='cv', folds=5, rows=500, stratified=False)
    >>> choose_validation(500, "regression", valid_rows=88, in_time_order=True).describe()
    'holdout of 88 rows'
    >>> choose_validation(50_000, "classification", folds=3, method="cv").describe()
    '3-fold stratified cross-validation over 50,000 rows'
    >>> choose_validation(500, "regression", in_time_order=True, method="cv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.ConfigError: validation = 'cv' cannot score a table split in time order (--time-column): ...
    """
    if method not in ("auto", *METHODS):
        raise ConfigError(f"validation = {method!r} is not one of auto, {', '.join(METHODS)}")
    if method == "cv" and in_time_order:
        raise ConfigError("validation = 'cv' cannot score a table split in time order (--time-column): shuffled "
                          "folds would train on rows after the ones they score; use --validation holdout or auto")
    if method == "cv" or (method == "auto" and rows < cv_below and not in_time_order
                          and not _too_big_for(rows, columns, time_budget)):
        return Validation("cv", folds, rows, stratified=task == "classification")
    held = valid_rows if valid_rows is not None else round(rows * 15 / 85)
    return Validation("holdout", 1, held)


def _too_big_for(rows: int, columns: int | None, time_budget: float | None) -> bool:
    """FLAML's measure: would five fits a trial on ``rows`` × ``columns`` starve a search of ``time_budget`` s?"""
    if columns is None or time_budget is None:
        return False
    return rows * columns / 0.9 >= CELLS_PER_HOUR * time_budget / 3600


__all__ = ["CELLS_PER_HOUR", "CV_BELOW_ROWS", "FOLDS", "Validation", "choose_validation"]
