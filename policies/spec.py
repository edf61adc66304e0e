"""Policies from short spec strings, as the CLI and the benchmark name them."""

from __future__ import annotations

from cachepilot.errors import InvalidInputError
from cachepilot.core.policy import CachePolicy
from cachepilot.policies.baselines import AlwaysCompute, FixedInterval, Schedule, Threshold

POLICY_SPECS = ("always | fixed:N (N >= 1) | threshold:DELTA (>= 0) | schedule:MASK (e.g. 1101..., one 0/1 per "
                "step) | learned:TARGET (the shipped policy at a target compute fraction in (0, 1])")


def make_policy(spec: str | CachePolicy) -> CachePolicy:
    """'always', 'fixed:3', 'threshold:0.1', 'schedule:110101...' -> a policy."""
    if isinstance(spec, CachePolicy):
        return spec
    name, _, arg = str(spec).strip().partition(":")
    name = name.lower()
    try:
        if name == "always" and not arg:
            return AlwaysCompute()
        if name == "fixed" and arg:
            return FixedInterval(int(arg))
        if name == "threshold" and arg:
            return Threshold(float(arg))
        if name == "schedule" and arg and set(arg) <= {"0", "1"}:
            return Schedule([c == "1" for c in arg])
        if name == "learned":
            from cachepilot.checkpoints import DEFAULT_POLICY
            from cachepilot.policies.learned import LearnedPolicy

            return LearnedPolicy(DEFAULT_POLICY, target=float(arg) if arg else 0.3)
    except ValueError as err:
        if isinstance(err, InvalidInputError):
            raise
        raise InvalidInputError(f"bad policy spec {spec!r}: {err}; expected {POLICY_SPECS}") from None
    raise InvalidInputError(f"unknown policy spec {spec!r}; expected {POLICY_SPECS}")
