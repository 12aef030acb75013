"""A regression label on a log scale: the model learns ``log1p(y - offset)``, its predictions are mapped back.

A label spread over orders of magnitude (prices, durations, counts) is learnt
better on a log scale: a squared loss on the raw values is decided by a
handful of huge rows. :class:`LogTarget` wraps a fitted regressor whose
output is on that scale and returns ``expm1(output) + offset``, so that to
everything downstream (the judge, the verification, the exporters, which
append the inverse to every artifact's graph) it is a regressor of the
label itself.

>>> import numpy as np
>>> from sklearn.linear_model import LinearRegression
>>> X = np.arange(1.0, 6.0).reshape(-1, 1); y = np.exp(X[:, 0])
>>> model = LogTarget(LinearRegression(), offset=0.0).fit(X, y)
>>> bool(np.allclose(model.predict(X), y, rtol=0.1))
True
>>> unwrap_target(model).__class__.__name__, target_inverse(model)
('LinearRegression', ('log1p', 0.0))
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone


class LogTarget(RegressorMixin, BaseEstimator):
    """``regressor`` fitted on ``log1p(y - offset)``; :meth:`predict` is ``expm1(regressor.predict(X)) + offset``.

    ``offset`` is at most the smallest label (``0.0`` for a label that is
    never negative), so that ``y - offset >= 0``. :meth:`of` wraps a regressor
    already fitted on the transformed label (how the search's learners build
    one); :meth:`fit` fits a clone, as scikit-learn expects.
    """

    def __init__(self, regressor=None, offset: float = 0.0):
        self.regressor = regressor
        self.offset = offset

    @classmethod
    def of(cls, fitted, offset: float = 0.0) -> LogTarget:
        """Wrap a regressor already fitted on ``forward(y, offset)``."""
        model = cls(fitted, offset)
        model.regressor_ = fitted
        model.n_features_in_ = getattr(fitted, "n_features_in_", None)
        return model

    def fit(self, X, y, **fit_params):
        self.regressor_ = clone(self.regressor).fit(X, forward(y, self.offset), **fit_params)
        self.n_features_in_ = getattr(self.regressor_, "n_features_in_", np.shape(X)[1])
        return self

    def predict(self, X):
        return inverse(self.regressor_.predict(X), self.offset)


def forward(y, offset: float = 0.0) -> np.ndarray:
    """The label on the log scale the wrapped regressor learns: ``log1p(y - offset)``."""
    shifted = np.asarray(y, dtype=np.float64) - offset
    if shifted.size and shifted.min() < 0:
        raise ValueError(f"a log-scale label needs y >= offset ({offset}); the smallest label is "
                         f"{shifted.min() + offset}")
    return np.log1p(shifted)


def inverse(z, offset: float = 0.0) -> np.ndarray:
    """Back from the log scale: ``expm1(z) + offset`` (what every exported artifact appends to its graph)."""
    return np.expm1(np.asarray(z, dtype=np.float64)) + offset


def unwrap_target(model):
    """The regressor inside a :class:`LogTarget` (``model`` itself otherwise)."""
    return model.regressor_ if isinstance(model, LogTarget) else model


def target_inverse(model) -> tuple[str, float] | None:
    """``("log1p", offset)`` for a :class:`LogTarget`, ``None`` for a model of the label itself: what an exporter
    must append after the wrapped regressor's output."""
    return ("log1p", float(model.offset)) if isinstance(model, LogTarget) else None


__all__ = ["LogTarget", "forward", "inverse", "target_inverse", "unwrap_target"]
