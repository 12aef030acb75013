"""The model families edgeml searches over, and the learners that fit them."""

from edgeml.models.learners import LEARNERS, Learner, model_steps

__all__ = ["LEARNERS", "Learner", "model_steps"]
