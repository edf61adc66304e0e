"""`cachepilot fit --budget`: a fit sized to a number of transformer evaluations or a wall-clock duration.

Every stage's sample counts (collection, search / gate scoring, bench) and PPO's timesteps are scaled down by one
common factor, each kept at its minimum, until the plan (`train.plan`, upper bounds included) fits the budget.
Settings that are not sizes (steps, targets, policies, step counts) are never changed: a budget below the plan at
the minimum sizes is refused with that minimum. A duration is turned into evaluations with the probe's seconds
per evaluation (the transformer's time only).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from cachepilot.errors import InvalidInputError

# the sizes a budget scales, and the least each keeps (policy_timesteps: one episode per env, set per config)
MINIMUMS = {"collect_samples": 4, "search_samples": 2, "select_samples": 0, "bench_samples": 2}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_budget(text: str) -> tuple[str, float]:
    """("evaluations", N) for a plain number (`200000`, `2e5`), ("seconds", S) for a duration (`1h`, `90m`, `30s`,
    `1h30m`); an InvalidInputError of one line otherwise."""
    text = str(text).strip().lower()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not value >= 1 or value != value or value == float("inf"):
            raise InvalidInputError(f"fit: budget {text!r} must be at least 1 evaluation")
        return "evaluations", value
    parts = _DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise InvalidInputError(f"fit: budget {text!r} is neither a number of transformer evaluations nor a "
                                "duration like 1h, 90m, 30s or 1h30m")
    seconds = sum(float(amount) * _UNIT[unit] for amount, unit in parts)
    if seconds <= 0:
        raise InvalidInputError(f"fit: budget {text!r} is no time at all")
    return "seconds", seconds


def budget_evaluations(text: str, seconds_per_evaluation: float) -> float:
    kind, value = parse_budget(text)
    return value if kind == "evaluations" else value / seconds_per_evaluation


def _minimum_timesteps(config) -> int:
    return config.policy_envs * max(config.policy_steps or [config.steps])


def scaled(config, factor: float):
    """`config` with every size scaled by `factor` in [0, 1], each kept at its minimum (never above its own value)."""
    sizes = {name: max(min(least, getattr(config, name)), int(getattr(config, name) * factor))
             for name, least in MINIMUMS.items()}
    least = min(_minimum_timesteps(config), config.policy_timesteps)
    sizes["policy_timesteps"] = max(least, int(config.policy_timesteps * factor))
    return replace(config, **sizes)


def size_to_budget(config, evaluations: float, cost: Callable[[object], float], text: str = ""):
    """The largest scaling of `config` whose planned evaluations (`cost(config)`) fit `evaluations`; the config as
    it is when it fits whole; an InvalidInputError naming the minimum when not even the minimum sizes fit."""
    if cost(config) <= evaluations:
        return config
    least = cost(scaled(config, 0.0))
    if least > evaluations:
        said = f"{text} = " if text and parse_budget(text)[0] == "seconds" else ""
        raise InvalidInputError(f"fit: budget {said}{evaluations:,.0f} transformer evaluations is below this fit's "
                                f"minimum of {least:,.0f} (its sizes at their least: "
                                + ", ".join(f"{k} {v}" for k, v in _least_sizes(config).items())
                                + "); raise the budget, or lower steps / targets / policies")
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if cost(scaled(config, middle)) <= evaluations else (low, middle)
    return scaled(config, low)


def _least_sizes(config) -> dict:
    """The sizes the recipe uses, at their least (a lean fit has no collection and no policy)."""
    least = scaled(config, 0.0)
    names = ("search_samples", "bench_samples") if config.recipe == "lean" else (*MINIMUMS, "policy_timesteps")
    return {name: getattr(least, name) for name in names}
