"""The shared types every layer speaks: actions, observations, the residual history, the policy and predictor
interfaces and the forecast context.

This is the bottom layer: it imports torch and `cachepilot.errors` only, so the runtime, the policies and the
predictors can all depend on it without depending on each other.
"""

from cachepilot.core.actions import NUM_ACTIONS, Action
from cachepilot.core.history import ResidualHistory
from cachepilot.core.observation import Observation
from cachepilot.core.policy import CachePolicy, compute_where
from cachepilot.core.predictor import ForecastContext, Predictor

__all__ = ["NUM_ACTIONS", "Action", "CachePolicy", "ForecastContext", "Observation", "Predictor",
           "ResidualHistory", "compute_where"]
