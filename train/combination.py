"""Fit the combination forecaster (`cachepilot.predictors.combination`) in closed form, L2P-style.

Where the data comes from: full-compute trajectories first, as L2P fits its per-timestep weights (teacher
forcing: every past feature the predictor reads is the true one). One recording per step count serves every
schedule of that count (each schedule is simulated on it: its computes fill the history, its skipped steps are
forecast by every base forecaster), so that fit costs one full-compute sampling of the training samples.

`trajectory="cached"` goes on along the cached trajectory: the states the cached sampler visits under each
schedule differ from the full-compute ones, and a forecaster's error feeds back into the inputs of the next
steps. So each schedule is sampled with its current weights while the stack also runs for real at every step
(the true residual at the cached state), and the weights are refitted on those steps (DAgger-style, `rounds`
times, the rounds' data pooled). It costs, per schedule and round, a sampling with the stack evaluated at every
step beside the schedule's own computes.

Per forecast step t the weights solve the ridge problem

    min_w  sum ||R_t - sum_m w_m P_{t,m}||^2 + lam * s_t * ||w - w0_t||^2

over all training rows and elements (R_t the true residual, P_{t,m} base forecaster m's forecast of it,
s_t = trace(G_t) / M the mean squared forecast norm, w0_t the one-hot of the single base with the lowest error at
t): the normal equations (G_t + lam s_t I) w = b_t + lam s_t w0_t are accumulated in float64 (an M x M matrix per
step) and solved per step. The ridge only matters where bases are collinear (Taylor 2 equals Taylor 1 before a
row has three computes): there it keeps the nearest solution to the best single base.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.combination import DEFAULT_BASES, Combination, _make

DEFAULT_RIDGE = 1e-3


def schedule_mask(policy: str, num_steps: int) -> tuple[str, list[bool]]:
    """(the policy's spec, its compute mask over `num_steps`) for a fixed schedule: fixed:N or schedule:MASK, or
    uniform:F (the uniform schedule at compute fraction F: first and last step computed, the others evenly
    spread, as `SchedulePrior` makes it), which is spelled as its schedule:MASK."""
    from cachepilot.policies.baselines import FixedInterval, Schedule
    from cachepilot.policies.spec import make_policy

    name, _, arg = str(policy).strip().partition(":")
    if name == "uniform":
        try:
            fraction = float(arg)
        except ValueError:
            raise InvalidInputError(f"bad schedule {policy!r}: uniform:F takes a compute fraction in (0, 1]") from None
        return uniform_schedule(fraction, num_steps), uniform_mask(fraction, num_steps)
    made = make_policy(policy)
    if isinstance(made, FixedInterval):
        return made.spec(), [s % made.interval == 0 for s in range(num_steps)]
    if isinstance(made, Schedule) and made.mask.ndim == 1:
        if made.num_steps != num_steps:
            raise InvalidInputError(f"the schedule {policy[:40]}... has {made.num_steps} steps, not {num_steps}")
        return made.spec(), made.mask.tolist()
    raise InvalidInputError(f"the combination forecaster is fitted per step of a fixed schedule (fixed:N, "
                            f"schedule:MASK, uniform:F); {policy!r} decides per sample")


def uniform_mask(fraction: float, num_steps: int) -> list[bool]:
    from cachepilot.policies.prior import SchedulePrior

    return SchedulePrior().mask(fraction, num_steps)


def uniform_schedule(fraction: float, num_steps: int) -> str:
    """The policy spec (schedule:MASK) of the uniform schedule at compute fraction `fraction`."""
    return "schedule:" + "".join("1" if c else "0" for c in uniform_mask(fraction, num_steps))


def _solve(hessian: torch.Tensor, rhs: torch.Tensor, bases: int, affine: bool) -> torch.Tensor:
    """argmin w^T H w - 2 w^T rhs, the weights of each consecutive group of `bases` summing to 1 where `affine`
    (the KKT system: an equality-constrained least squares, still one linear solve)."""
    if not affine:
        return torch.linalg.solve(hessian, rhs)
    groups = len(rhs) // bases
    constraint = torch.block_diag(*[torch.ones(1, bases, dtype=hessian.dtype)] * groups)
    kkt = torch.cat([torch.cat([hessian, constraint.T], 1),
                     torch.cat([constraint, torch.zeros(groups, groups, dtype=hessian.dtype)], 1)])
    return torch.linalg.solve(kkt, torch.cat([rhs, torch.ones(groups, dtype=hessian.dtype)]))[:len(rhs)]


@dataclass
class NormalEquations:
    """Per step: G = sum P P^T (M x M), b = sum P R, rr = sum R^2, float64, over every row and element."""

    num_steps: int
    bases: int
    gram: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    target: torch.Tensor = field(init=False)
    count: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.num_steps, self.bases, self.bases, dtype=torch.float64)
        self.cross = torch.zeros(self.num_steps, self.bases, dtype=torch.float64)
        self.target = torch.zeros(self.num_steps, dtype=torch.float64)
        self.count = torch.zeros(self.num_steps, dtype=torch.float64)

    def add(self, step: int, parts: torch.Tensor, target: torch.Tensor) -> None:
        """parts (M, *shape): each base's forecast; target (*shape): the true residual."""
        p = parts.reshape(self.bases, -1).double()
        r = target.reshape(-1).double()
        self.gram[step] += p @ p.T
        self.cross[step] += p @ r
        self.target[step] += r @ r
        self.count[step] += r.numel()

    def errors(self, weights: torch.Tensor) -> torch.Tensor:
        """(steps,) summed squared error of the forecast sum_m w[t, m] P_{t,m}."""
        w = weights.double()
        return (torch.einsum("tm,tmn,tn->t", w, self.gram, w) - 2 * (w * self.cross).sum(1) + self.target)

    def base_errors(self) -> torch.Tensor:
        """(steps, M) summed squared error of each base alone."""
        return self.gram.diagonal(dim1=1, dim2=2) - 2 * self.cross + self.target[:, None]

    def solve(self, forecast: Sequence[bool], ridge: float = DEFAULT_RIDGE, affine: bool = True) -> torch.Tensor:
        """(steps, M) float32 weights: the ridge solution at the forecast steps (summing to 1 where `affine`), the
        best base's one-hot (the prior) elsewhere, never used by the schedule."""
        best = self.base_errors().argmin(1)
        prior = torch.nn.functional.one_hot(best, self.bases).double()
        weights = prior.clone()
        eye = torch.eye(self.bases, dtype=torch.float64)
        for t in (t for t, f in enumerate(forecast) if f and self.count[t] > 0):
            scale = ridge * max(float(self.gram[t].trace()) / self.bases, 1e-30)
            weights[t] = _solve(self.gram[t] + scale * eye, self.cross[t] + scale * prior[t], self.bases, affine)
        return weights.float()


@dataclass
class TrajectoryEquations:
    """The linearised error of the final sample, ||sum_t c_t e_t||^2 over every row and element, as a quadratic in
    all forecast steps' weights at once (F x M unknowns): e_t the forecast error at forecast step t, c_t the
    response of the final sample to a unit model output at step t (`scheduler_response`)."""

    forecast: list[int]
    bases: int
    coefficients: torch.Tensor
    gram: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    target: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        size = len(self.forecast) * self.bases
        self.gram = torch.zeros(size, size, dtype=torch.float64)
        self.cross = torch.zeros(size, dtype=torch.float64)

    def add(self, parts: torch.Tensor, targets: torch.Tensor) -> None:
        """parts (F, M, *shape): each base's forecast at each forecast step; targets (F, *shape): the truth."""
        c = self.coefficients[self.forecast].double()
        design = (parts.flatten(2).double() * c[:, None, None]).reshape(len(self.forecast) * self.bases, -1)
        accumulated = (targets.flatten(1).double() * c[:, None]).sum(0)
        self.gram += design @ design.T
        self.cross += design @ accumulated
        self.target += float(accumulated @ accumulated)

    def error(self, weights: torch.Tensor) -> float:
        """The summed squared accumulated error of (steps, M) weights."""
        w = weights[self.forecast].reshape(-1).double()
        return float(w @ self.gram @ w - 2 * w @ self.cross) + self.target

    def solve(self, steps: NormalEquations, ridge: float = DEFAULT_RIDGE, beta: float = 1.0,
              affine: bool = True) -> torch.Tensor:
        """(steps, M) weights minimising the accumulated error + beta * sum_t c_t^2 ||e_t||^2 (the error if the steps'
        errors were independent), ridge toward the best single base per step; the prior off the forecast steps."""
        prior = torch.nn.functional.one_hot(steps.base_errors().argmin(1), self.bases).double()
        hessian, rhs = self.gram.clone(), self.cross.clone()
        c = self.coefficients.double()
        for j, t in enumerate(self.forecast):
            block = slice(j * self.bases, (j + 1) * self.bases)
            hessian[block, block] += beta * c[t] ** 2 * steps.gram[t]
            rhs[block] += beta * c[t] ** 2 * steps.cross[t]
        scale = ridge * max(float(hessian.trace()) / max(len(rhs), 1), 1e-30)
        flat = _solve(hessian + scale * torch.eye(len(rhs), dtype=torch.float64),
                      rhs + scale * prior[self.forecast].reshape(-1), self.bases, affine)
        weights = prior.clone()
        weights[self.forecast] = flat.reshape(len(self.forecast), self.bases)
        return weights.float()


RESPONSE_IMPULSE = 1e-4  # small: a scheduler that clips its x0 estimate stays linear around a zero sample


def scheduler_response(pipe: Any, num_steps: int) -> torch.Tensor | None:
    """(steps,): how much the final sample moves per unit of model output at each step, all other outputs zero,
    from a copy of the pipeline's scheduler as its last call of `num_steps` steps set it (the impulse response
    of a linear sampler: DDIM, Euler, flow matching). None where it cannot be read (the timesteps of another
    count, a stochastic or failing step)."""
    import copy

    scheduler = getattr(pipe, "scheduler", None)
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None or len(timesteps) != num_steps:
        return None
    response = []
    try:
        for t in range(num_steps):
            fresh = copy.deepcopy(scheduler)
            for name, value in (("_step_index", None), ("_begin_index", None), ("lower_order_nums", 0),
                                ("last_sample", None)):
                if hasattr(fresh, name):
                    setattr(fresh, name, value)
            if isinstance(getattr(fresh, "model_outputs", None), list):
                fresh.model_outputs = [None] * len(fresh.model_outputs)
            x = torch.zeros(1)
            for i, timestep in enumerate(timesteps):
                output = torch.full((1,), RESPONSE_IMPULSE) if i == t else torch.zeros(1)
                x = fresh.step(output, timestep, x, return_dict=False)[0]
            response.append(float(x) / RESPONSE_IMPULSE)
    except Exception:  # a scheduler this reading does not fit: the caller falls back to the per-step objective
        return None
    response = torch.tensor(response, dtype=torch.float64)
    return response if torch.isfinite(response).all() and response.abs().sum() > 0 else None


def accumulate(equations: NormalEquations, predictors: Sequence, steps: torch.Tensor, residuals: torch.Tensor,
               mask: Sequence[bool], trajectory: TrajectoryEquations | None = None) -> None:
    """Simulate the schedule `mask` on one recorded trajectory (steps (T,), residuals (T, rows, *feature)): its
    computes fill the history, every skipped step adds each base's forecast and the true residual (to
    `trajectory` too, all forecast steps at once)."""
    history = ResidualHistory(max(p.history_size for p in predictors))
    history.allocate(residuals[0])
    rows = torch.arange(residuals.shape[1])
    forecasts, targets = [], []
    for i, step in enumerate(steps.tolist()):
        if mask[i]:
            history.update(rows, int(step), residuals[i])
            continue
        parts = torch.stack([p.predict(history, int(step)) for p in predictors])
        equations.add(i, parts, residuals[i])
        if trajectory is not None:
            forecasts.append(parts)
            targets.append(residuals[i])
    if trajectory is not None and forecasts:
        trajectory.add(torch.stack(forecasts), torch.stack(targets))


class ScheduleFit:
    """The equations of one schedule at one step count: per step, and with a scheduler response, the final
    sample's accumulated error too (`objective="final"`)."""

    def __init__(self, mask: Sequence[bool], bases: Sequence[str], response: torch.Tensor | None = None):
        self.mask, self.bases = list(mask), list(bases)
        self.steps = NormalEquations(len(self.mask), len(self.bases))
        forecast = [t for t, m in enumerate(self.mask) if not m]
        self.final = None if response is None else TrajectoryEquations(forecast, len(self.bases), response)

    def add(self, predictors: Sequence, steps: torch.Tensor, residuals: torch.Tensor) -> None:
        accumulate(self.steps, predictors, steps, residuals, self.mask, self.final)

    def solve(self, ridge: float = DEFAULT_RIDGE, beta: float = 1.0, affine: bool = True) -> torch.Tensor:
        if self.final is not None:
            return self.final.solve(self.steps, ridge, beta, affine)
        return self.steps.solve([not m for m in self.mask], ridge, affine)

    def entry(self, weights: torch.Tensor) -> dict:
        """The training errors of `weights` and of each base alone, relative to the residuals' squared norm at the
        forecast steps (and, objective final, to the accumulated residual's)."""
        skipped = ~torch.tensor(self.mask, dtype=torch.bool)
        norm = float(self.steps.target[skipped].sum()) or 1.0
        entry = {"relative_error": float(self.steps.errors(weights)[skipped].sum()) / norm,
                 "base_relative_error": dict(zip(self.bases, (self.steps.base_errors()[skipped].sum(0) / norm).tolist()))}
        if self.final is not None:
            final_norm = self.final.target or 1.0
            one_hot = torch.eye(len(self.bases))
            entry["final_relative_error"] = self.final.error(weights) / final_norm
            entry["base_final_relative_error"] = {
                base: self.final.error(one_hot[m].expand(len(self.mask), -1)) / final_norm
                for m, base in enumerate(self.bases)}
        return entry


def fit_combination(
    trajectories: Mapping[int, Iterable[tuple[torch.Tensor, torch.Tensor]]],
    schedules: Sequence[str], bases: Sequence[str] = DEFAULT_BASES, ridge: float = DEFAULT_RIDGE,
    responses: Mapping[int, torch.Tensor] | None = None, beta: float = 1.0, affine: bool = True,
) -> tuple[Combination, dict]:
    """Weights for every schedule (fixed:N, schedule:MASK of that count, uniform:F) at every step count of
    `trajectories` ({num_steps: [(steps (T,), residuals (T, rows, *feature)), ...]}, full compute): per step, or,
    where `responses` gives the count's scheduler response, for the final sample's accumulated error (`beta`: the
    weight of the per-step errors beside it). Also returns a report: per count and schedule, the training errors
    of the fit and of each base alone (`ScheduleFit.entry`)."""
    if ridge < 0:
        raise InvalidInputError(f"ridge must be >= 0, got {ridge}")
    predictors = [_make(b) for b in bases]
    tables, report = {}, {}
    for num_steps, recorded in trajectories.items():
        recorded = list(recorded)
        if not recorded:
            raise InvalidInputError(f"fit_combination: no trajectory at {num_steps} steps")
        for schedule in schedules:
            spec, mask = _checked_mask(schedule, num_steps)
            fit = ScheduleFit(mask, bases, (responses or {}).get(num_steps))
            for steps, residuals in recorded:
                fit.add(predictors, steps, residuals)
            tables[(num_steps, spec)] = fit.solve(ridge, beta, affine)
            report[f"{num_steps}|{spec}"] = {"num_steps": num_steps, "policy": spec, "schedule": schedule,
                                             **fit.entry(tables[(num_steps, spec)])}
    return Combination(bases, tables), report


def _checked_mask(schedule: str, num_steps: int) -> tuple[str, list[bool]]:
    spec, mask = schedule_mask(schedule, num_steps)
    if not mask[0]:
        raise InvalidInputError(f"the schedule {schedule} does not compute the first step")
    return spec, mask


def record_trajectories(pipe: Any, num_steps: int, conditions: Sequence[dict], seeds: Sequence[int],
                        call_kwargs: dict | None = None, batch_size: int = 64, policy: str | None = None,
                        predictor: Any = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(steps (T,), residuals (T, rows, *feature) float32, stack evaluations): the block stack's true residual at
    every step of sampling `conditions[i]` with seed `seeds[i]`, with full compute, or under the cache with
    `policy` and `predictor` (then at the inputs the cached sampler visits: each step's stack also runs for real
    beside the engine's own computes). A pipeline that calls its transformer several times per step (true CFG)
    has its calls of a step stacked as extra rows. Stack evaluations count batch rows x steps."""
    from cachepilot.driver import SamplingDriver, caching
    from cachepilot.errors import CachepilotError
    from cachepilot.train.collect import _StackRecorder

    computes = 0 if policy is None else sum(schedule_mask(policy, num_steps)[1])
    driver = SamplingDriver(pipe, num_steps, dict(call_kwargs or {}), batch_size=batch_size)
    chunks = []
    for start in range(0, len(conditions), batch_size):
        with _StackRecorder(pipe.transformer) as recorder, caching(pipe, policy, predictor):
            driver.sample(list(conditions[start:start + batch_size]), list(seeds[start:start + batch_size]))
        calls = recorder.residuals
        if not calls or len(calls) % num_steps:
            raise CachepilotError(f"{type(pipe).__name__} called its transformer {len(calls)} times in {num_steps} "
                                  "steps: the fit needs the same number of calls at every step")
        k = len(calls) // num_steps
        chunks.append(torch.stack([torch.cat(calls[i * k:(i + 1) * k]).float().cpu() for i in range(num_steps)]))
    residuals = torch.cat(chunks, 1)
    return torch.arange(num_steps), residuals, residuals.shape[1] * (num_steps + computes)


TRAJECTORIES = ("full", "cached")
OBJECTIVES = ("step", "final")


def fit_on_pipeline(
    pipe: Any, steps: Sequence[int], schedules: Sequence[str], conditions: Sequence[dict], samples: int = 16,
    seed: int | None = None, call_kwargs: dict | None = None, bases: Sequence[str] = DEFAULT_BASES,
    ridge: float = DEFAULT_RIDGE, batch_size: int = 64, trajectory: str = "full", rounds: int = 1,
    objective: str = "step", beta: float = 1.0, affine: bool = True,
) -> tuple[Combination, dict]:
    """Record `samples` full-compute trajectories per step count (condition i mod len(conditions), seed seed + i;
    default the calibration seeds, disjoint from the bench's) and fit.

    trajectory="cached" then refits each schedule on the trajectories its cached sampler visits (DAgger-style):
    `rounds` times, sample under the schedule with the current weights, record the true residual at every step
    there, and solve on all cached rounds' data pooled. The record holds the fit's wall seconds (recording and
    solving apart) and its stack evaluations (batch rows x steps, true CFG's passes as rows)."""
    from cachepilot.seeds import SEARCH

    if not conditions:
        raise InvalidInputError("fit-combination needs at least one condition")
    if samples < 1 or rounds < 1:
        raise InvalidInputError(f"samples and rounds must be >= 1, got {samples} and {rounds}")
    if trajectory not in TRAJECTORIES:
        raise InvalidInputError(f"trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for num_steps in steps:  # every schedule checked before any sampling
        for schedule in schedules:
            _checked_mask(schedule, num_steps)
    seed = SEARCH if seed is None else seed
    chosen = [conditions[i % len(conditions)] for i in range(samples)]
    seeds = [seed + i for i in range(samples)]
    sampling = solving = 0.0
    trajectories, responses, evaluations = {}, {}, 0
    for num_steps in steps:
        tic = time.perf_counter()
        steps_t, residuals, calls = record_trajectories(pipe, num_steps, chosen, seeds, call_kwargs, batch_size)
        sampling += time.perf_counter() - tic
        trajectories[num_steps] = [(steps_t, residuals)]
        evaluations += calls
        if objective == "final":
            responses[num_steps] = scheduler_response(pipe, num_steps)
            if responses[num_steps] is None:
                raise InvalidInputError(f"the final-sample objective could not read how {type(pipe.scheduler).__name__}"
                                        " maps model outputs to the sample: fit with the per-step objective")
    tic = time.perf_counter()
    combination, report = fit_combination(trajectories, schedules, bases, ridge, responses, beta, affine)
    solving += time.perf_counter() - tic
    if trajectory == "cached":
        predictors = [_make(b) for b in bases]
        tables = dict(combination.tables)
        for num_steps in steps:
            for schedule in schedules:
                spec, mask = _checked_mask(schedule, num_steps)
                fit = ScheduleFit(mask, bases, responses.get(num_steps))
                for _ in range(rounds):
                    current = Combination(bases, {(num_steps, spec): tables[(num_steps, spec)]})
                    tic = time.perf_counter()
                    steps_t, residuals, calls = record_trajectories(pipe, num_steps, chosen, seeds, call_kwargs,
                                                                    batch_size, spec, current)
                    sampling += time.perf_counter() - tic
                    evaluations += calls
                    tic = time.perf_counter()
                    fit.add(predictors, steps_t, residuals)
                    tables[(num_steps, spec)] = fit.solve(ridge, beta, affine)
                    solving += time.perf_counter() - tic
                report[f"{num_steps}|{spec}"]["cached"] = fit.entry(tables[(num_steps, spec)])
        combination = Combination(bases, tables)
    record = {"samples": samples, "seed": seed, "steps": list(steps), "schedules": list(schedules),
              "bases": list(bases), "ridge": ridge, "trajectory": trajectory, "objective": objective, "beta": beta, "affine": affine,
              "rounds": rounds if trajectory == "cached" else 0, "record_seconds": sampling,
              "solve_seconds": solving, "stack_evaluations": evaluations, "fit": report}
    return combination, record
