"""The model families edgeml fits (one registry), the learners that fit them, and edgeml's own estimators."""

from edgeml.models.families import FAMILIES, Family, family_of
from edgeml.models.learners import LEARNERS, Learner

__all__ = ["FAMILIES", "LEARNERS", "Family", "Learner", "family_of"]
