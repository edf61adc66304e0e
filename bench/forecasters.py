"""Bench methods for the training-free forecaster families: each on the fixed-interval schedules `fixed+taylor2`
uses (the same computes, only the forecast differs), plus Taylor 1.5 as the third Taylor baseline.

`fixed+hyca` fits its per-channel table on the pipeline itself the first time it is applied: full-compute
trajectories of the pipeline's default conditions at training noise seeds (disjoint from the bench's), at the
bench's step count, scored on the same fixed intervals.

`uniform+<name>` runs a forecaster on the uniform schedules at compute fractions 0.2 to 0.5 (first and last step
computed, the others evenly spread), and `uniform+combo` a fitted combination forecaster on the same schedules
(`combination_method`; `experiments.combination` fits it and runs them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import cachepilot
from cachepilot.bench.methods import Method, ours_method
from cachepilot.errors import InvalidInputError
from cachepilot.seeds import COLLECT

INTERVALS = (2, 3, 4, 5, 6)
FORECASTERS = {  # bench name -> predictor spec
    "taylor1.5": "taylor:1.5",
    "foca": "foca",
    "foca3": "foca:3",
    "hermite2": "hermite:2",
    "hermite2s0.7": "hermite:2:0.7",
    "freq0.25": "freq:0.25",
    "freq0.5": "freq:0.5",
    "chebyshev2": "chebyshev:2",
    "chebyshev2w6": "chebyshev:2:6",
    "chebyshev1w4": "chebyshev:1:4",
    "dmd1": "dmd:1",
    "dmd2": "dmd:2",
}
HYCA_FIT_SAMPLES = 8
HYCA_FIT_SEED = COLLECT  # the training seed range (collect's), disjoint from the bench's


def record_trajectories(pipe: Any, steps: int, samples: int = HYCA_FIT_SAMPLES,
                        seed: int = HYCA_FIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps (T,), residuals (T, rows, tokens, dim)): the block stack's true residual at every step of
    full-compute calls of the pipeline's default conditions (several transformer calls per step, as true
    CFG makes: stacked as extra rows)."""
    from cachepilot.conditions import pipeline_conditions
    from cachepilot.driver import SamplingDriver
    from cachepilot.embedded.base import call_kwargs_for, conditions_for
    from cachepilot.train.collect import _per_step, _StackRecorder

    conditions = conditions_for(pipe, samples)
    if conditions is None:  # not an embedded pipeline: every class of a class-conditional one
        try:
            conditions = list(pipeline_conditions(pipe).conditions)
        except InvalidInputError:
            raise InvalidInputError("fixed+hyca fits its table on the pipeline's default conditions (an embedded "
                                    "pipeline's, or a class-conditional one's classes); fit one with "
                                    "cachepilot.predictors.hyca.fit_hyca otherwise") from None
    conditions = [conditions[i % len(conditions)] for i in range(samples)]
    driver = SamplingDriver(pipe, steps, call_kwargs_for(pipe), batch_size=samples)
    with _StackRecorder(pipe.transformer) as recorder:
        driver.sample(conditions, [seed + i for i in range(samples)])
    residuals = torch.from_numpy(_per_step(recorder.residuals, steps, type(pipe).__name__)).float()
    return torch.arange(steps), residuals.transpose(0, 1)


def hyca_method(steps: int, intervals: Sequence[int] = INTERVALS) -> Method:
    from cachepilot.predictors.hyca import fit_hyca

    tables: dict[int, Any] = {}

    def apply(pipe, interval):
        if id(pipe) not in tables:
            tables[id(pipe)] = fit_hyca([record_trajectories(pipe, steps)], intervals=intervals)[0]
        cachepilot.enable(pipe, f"fixed:{interval}", tables[id(pipe)])
        return pipe

    return Method("fixed+hyca", list(intervals), apply, cachepilot.disable)


FRACTIONS = (0.2, 0.3, 0.4, 0.5)
UNIFORM_FORECASTERS = {"reuse": "reuse", "taylor1": "taylor:1", "taylor1.5": "taylor:1.5", "taylor2": "taylor:2",
                       "foca": "foca", "hermite2": "hermite:2", "dmd1": "dmd:1", "dmd2": "dmd:2"}


def uniform_methods(steps: int, forecasters: dict[str, str] | None = None) -> list[Method]:
    """uniform+<name> for each forecaster (default UNIFORM_FORECASTERS) on the uniform schedules of FRACTIONS."""
    from cachepilot.train.combination import uniform_schedule

    return [ours_method(f"uniform+{name}", lambda f: uniform_schedule(f, steps), spec, FRACTIONS)
            for name, spec in (forecasters or UNIFORM_FORECASTERS).items()]


def combination_method(steps: int, combination: Any, fractions: Sequence[float] = FRACTIONS) -> Method:
    """uniform+combo: a fitted `Combination` on the uniform schedules; a schedule it was not fitted for is refused
    before sampling."""
    from cachepilot.train.combination import uniform_schedule

    def apply(pipe, fraction):
        policy = uniform_schedule(fraction, steps)
        combination.check(steps, policy)
        cachepilot.enable(pipe, policy, combination)
        return pipe

    return Method("uniform+combo", list(fractions), apply, cachepilot.disable)


def forecaster_methods(steps: int = 50) -> list[Method]:
    """fixed+<name> for every forecaster family (see FORECASTERS) and the fitted hybrid."""
    return [ours_method(f"fixed+{name}", lambda n: f"fixed:{n}", spec, INTERVALS)
            for name, spec in FORECASTERS.items()] + [hyca_method(steps)]


TAYLORS = ("fixed+taylor1", "fixed+taylor1.5", "fixed+taylor2")


def psnr_table(rows: list[dict]) -> str:
    """Markdown: PSNR per fixed+ method and interval (the header gives taylor2's compute fraction), with each
    method's mean difference from the best of Taylor 1 / 1.5 / 2 at each interval, and from reuse."""
    table: dict[str, dict[int, dict]] = {}
    for row in rows:
        if str(row["method"]).startswith("fixed+") and row.get("knob") is not None:
            table.setdefault(row["method"], {})[int(row["knob"])] = row
    intervals = sorted({k for entries in table.values() for k in entries})
    best = {k: max(table[m][k]["psnr"] for m in TAYLORS if m in table) for k in intervals}
    reference = table.get("fixed+taylor2") or next(iter(table.values()))
    lines = ["| method | " + " | ".join(f"fixed:{k} ({reference[k]['compute_fraction']:.2f})" for k in intervals)
             + " | mean Δ vs best Taylor | mean Δ vs reuse |", "|---" * (len(intervals) + 3) + "|"]
    for method, entries in table.items():
        vs_taylor = sum(entries[k]["psnr"] - best[k] for k in intervals) / len(intervals)
        vs_reuse = (sum(entries[k]["psnr"] - table["fixed+reuse"][k]["psnr"] for k in intervals) / len(intervals)
                    if "fixed+reuse" in table else float("nan"))
        lines.append(f"| {method} | " + " | ".join(f"{entries[k]['psnr']:.2f}" for k in intervals)
                     + f" | {vs_taylor:+.2f} | {vs_reuse:+.2f} |")
    return "\n".join(lines)


def uniform_table(rows: list[dict]) -> str:
    """Markdown: PSNR per uniform+ method and compute fraction (the header gives the measured fraction), with each
    method's difference from the best training-free forecaster (every uniform+ method but the combination) at
    each fraction, and its mean."""
    table: dict[str, dict[float, dict]] = {}
    for row in rows:
        if str(row["method"]).startswith("uniform+") and row.get("knob") is not None:
            table.setdefault(row["method"], {})[float(row["knob"])] = row
    fractions = sorted({k for entries in table.values() for k in entries})
    free = [m for m in table if m != "uniform+combo"]
    best = {f: max(table[m][f]["psnr"] for m in free if f in table[m]) for f in fractions}
    reference = next(iter(table.values()))
    lines = ["| method | " + " | ".join(f"{f:g} ({reference[f]['compute_fraction']:.2f})" for f in fractions)
             + " | mean Δ vs best training-free |", "|---" * (len(fractions) + 2) + "|"]
    for method, entries in table.items():
        delta = sum(entries[f]["psnr"] - best[f] for f in fractions) / len(fractions)
        lines.append(f"| {method} | " + " | ".join(f"{entries[f]['psnr']:.2f}" for f in fractions)
                     + f" | {delta:+.2f} |")
    lines.append("| best training-free | " + " | ".join(
        max((m for m in free if f in table[m]), key=lambda m: table[m][f]["psnr"]).removeprefix("uniform+")
        for f in fractions) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cachepilot.bench.forecasters OUT/results.json
    import json
    import sys

    results = json.loads(open(sys.argv[1]).read())
    print(uniform_table(results) if any(str(r["method"]).startswith("uniform+") for r in results)
          else psnr_table(results))
