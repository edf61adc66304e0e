"""What a `cachepilot fit` will spend, before it spends it: per stage, the transformer evaluations its settings
imply and their wall time on the user's pipeline.

An evaluation is one block-stack evaluation of one sample (classifier-free guidance copies count as samples, a
partial stack by its blocks), the unit `bench.counting.StackCounter` measures while a stage runs. Each stage's
count follows from the config and the stage's code; where it depends on the data (a search's sweeps stop when no
move helps, a learned policy may compute less than its budget, PPO's random targets) the plan gives the upper bound
and marks it. Wall time is the count times the seconds per evaluation of a timed probe call of the user's pipeline
at the user's call kwargs (2 steps of a batch of 16, or the fit's batch size when smaller, after a warm-up call of the
same; the transformer's calls timed): the transformer's time only, at the batch most stages sample at; the training of the forecaster head and of PPO's
networks is not in it.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cachepilot.errors import InvalidInputError
from cachepilot.policies.budget import budget_computes

PROBE_STEPS = 2
PROBE_BATCH = 16  # the batch most stages sample at (search / gate samples, PPO envs, step sensitivity)


@dataclass
class StagePlan:
    stage: str
    evaluations: float
    bound: bool  # True: an upper bound (the stage's count depends on the data)
    note: str = ""


@dataclass
class Probe:
    """One timed call of the user's pipeline: per-evaluation seconds and evaluations per sample and step."""
    evaluations: float
    seconds: float
    steps: int = PROBE_STEPS
    batch: int = 1

    @property
    def seconds_per_evaluation(self) -> float:
        return self.seconds / self.evaluations

    @property
    def copies(self) -> float:
        """Stack evaluations per sample and step (2 under batched or true classifier-free guidance)."""
        return self.evaluations / (self.steps * self.batch)


@dataclass
class FitPlan:
    stages: list[StagePlan]
    seconds_per_evaluation: float | None
    copies: float
    assumed: bool = False  # True: the seconds per evaluation were given, not probed
    probe: dict | None = field(default=None)

    @property
    def evaluations(self) -> float:
        return sum(s.evaluations for s in self.stages)

    def seconds(self, stage: StagePlan | None = None) -> float | None:
        if self.seconds_per_evaluation is None:
            return None
        return (stage.evaluations if stage is not None else self.evaluations) * self.seconds_per_evaluation

    def to_json(self) -> dict:
        return {"seconds_per_evaluation": self.seconds_per_evaluation, "copies": self.copies, "assumed": self.assumed,
                "probe": self.probe, "stages": {s.stage: {"evaluations": s.evaluations, "bound": s.bound,
                                                          "seconds": self.seconds(s), "note": s.note}
                                                for s in self.stages}}

    def table(self) -> str:
        """Plain text, one stage a line (`<=` marks an upper bound)."""
        source = ("assumed" if self.assumed else "probed") if self.seconds_per_evaluation is not None else "no probe"
        per = f"{self.seconds_per_evaluation:.4g} s per evaluation ({source})" if self.seconds_per_evaluation else source
        lines = [f"fit plan: {per}, {self.copies:g} evaluation(s) per sample and step",
                 f"{'stage':<12} {'evaluations':>14} {'wall time':>11}  note"]
        for s in self.stages:
            lines.append(f"{s.stage:<12} {('<=' if s.bound else '') + f'{s.evaluations:,.0f}':>14} "
                         f"{format_duration(self.seconds(s)):>11}  {s.note}")
        bound = any(s.bound for s in self.stages)
        lines.append(f"{'total':<12} {('<=' if bound else '') + f'{self.evaluations:,.0f}':>14} "
                     f"{format_duration(self.seconds()):>11}")
        return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- the probe --------------------------------------------------------------------------------------------------
def probe_pipeline(pipe, call_kwargs: dict, condition: dict, batch: int = PROBE_BATCH) -> Probe:
    """Time one 2-step call of `batch` samples after a warm-up call of the same, counting its evaluations. A call
    that fails (out of memory at the batch the stages use) is an InvalidInputError with the pipeline's own message,
    before any stage runs."""
    from cachepilot.bench.counting import StackCounter
    from cachepilot.driver import SamplingDriver

    driver = SamplingDriver(pipe, PROBE_STEPS, call_kwargs, batch_size=batch)
    conditions, seeds = [condition] * batch, list(range(batch))
    cuda = pipe.device.type == "cuda"
    spent = {"seconds": 0.0, "tic": 0.0}

    def start(module, args, kwargs):
        if cuda:
            torch.cuda.synchronize(pipe.device)
        spent["tic"] = time.perf_counter()

    def stop(module, args, kwargs, output):
        if cuda:
            torch.cuda.synchronize(pipe.device)
        spent["seconds"] += time.perf_counter() - spent["tic"]

    try:
        driver.sample(conditions, seeds)  # warm-up: allocator, kernels, compilation
        # the transformer's calls only: text encoding and decoding run once per call, not per evaluation
        handles = [pipe.transformer.register_forward_pre_hook(start, with_kwargs=True),
                   pipe.transformer.register_forward_hook(stop, with_kwargs=True)]
        try:
            with StackCounter(pipe.transformer) as counter:
                driver.sample(conditions, seeds)
        finally:
            for handle in handles:
                handle.remove()
        seconds = spent["seconds"]
    except Exception as err:  # noqa: BLE001 - whatever the pipeline raises, in its own words, before any stage
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        raise InvalidInputError(f"{type(pipe).__name__} fails a {PROBE_STEPS}-step probe call at the fit's call "
                                f"kwargs: {message}") from None
    if counter.evaluations <= 0:
        raise InvalidInputError(f"{type(pipe).__name__}'s probe call evaluated no transformer block")
    return Probe(counter.evaluations, seconds, PROBE_STEPS, batch)


# -- per-stage counts, in sample-steps (times `copies` at the end) -----------------------------------------------
def _computes(spec: str, steps: int) -> int | None:
    """Stack evaluations per sample of a policy spec whose schedule is known in advance (None: data-dependent)."""
    name, _, arg = spec.partition(":")
    if name == "always":
        return steps
    if name == "fixed":
        return math.ceil(steps / int(arg))  # steps 0, n, 2n, ...
    if name == "schedule":
        return arg.count("1")
    return None


def _collect(policies: list[str], samples: int, steps: int, sensitivity: bool = True) -> tuple[float, bool]:
    """Step-sensitivity weights (one perturbed run per step plus a clean one; not with `sensitivity=False`: the
    DAgger round reuses round 0's), then each policy's trajectories: a cached one also runs every step bypassed
    for the true residual (collect's recorder)."""
    from cachepilot.train.sensitivity import SENSITIVITY_SAMPLES

    total, bound = (SENSITIVITY_SAMPLES * steps * (steps + 1) if sensitivity else 0), False
    for spec in policies:
        computes = _computes(spec, steps)
        if spec == "always":
            total += samples * steps
        elif computes is not None:
            total += samples * (steps + computes)
        else:
            total, bound = total + samples * 2 * steps, True
    return total, bound


def _defaults(function, *names: str) -> list[Any]:
    parameters = inspect.signature(function).parameters
    return [parameters[name].default for name in names]


def _search(config, steps: int) -> float:
    """Per target: the reference, every start, at most `max_sweeps` sweeps (`sweep_evaluations`: the incumbent
    once, each move from its first changed step on), and the selection's re-scoring (upper bound)."""
    from cachepilot.train.schedule_search import search_schedule, start_masks, sweep_evaluations

    max_sweeps, shifts = _defaults(search_schedule, "max_sweeps", "shifts")
    total = 0.0
    for target in config.targets:
        computes = budget_computes(target, steps)
        starts = sum(sum(mask) for mask in start_masks(steps, computes, compute_last=False))
        sweeps = max_sweeps * sweep_evaluations(computes, shifts)
        total += config.search_samples * (steps + starts + sweeps)
        if config.select_samples:
            total += config.select_samples * (steps + starts + max_sweeps * computes)
    return total


def _mask_choice(config, steps: int) -> float:
    """`train.mask_choice`: the search's starts under Taylor-1 (references and every start), then per target the
    head's mask and the best starts scored whole with each forecaster on the gate's samples (the fit's search
    samples; the reference, each mask at most at its budget)."""
    from cachepilot.predictors.gated import SCHEDULE_CHOICES
    from cachepilot.train.lean import lean_evaluations
    from cachepilot.train.mask_choice import CANDIDATE_FORECASTER, STARTS

    budgets = sum(budget_computes(t, steps) for t in config.targets)
    starts = lean_evaluations(steps, list(config.targets), config.search_samples, (CANDIDATE_FORECASTER,))
    return starts + config.search_samples * (steps + (1 + STARTS) * len(SCHEDULE_CHOICES) * budgets)


def _gate(config, counts: list[int]) -> float:
    from cachepilot.predictors.gated import GATE_CHOICES
    from cachepilot.train.calibrate_forecaster import calibrate_gate, calibration_schedule

    (intervals,) = _defaults(calibrate_gate, "intervals")
    return sum(config.search_samples * (n + len(GATE_CHOICES) * sum(
        _computes(calibration_schedule(i, n), n) for i in sorted(set(intervals)))) for n in counts)


def _policy_gate(config, counts: list[int]) -> float:
    """Per step count of the policy and the gate: the reference, then each forecaster on the policy at each target
    and on the searched masks (at the fit's count; scored already where the schedules stage chose them among
    Taylor-1's): at most each target's budget."""
    from cachepilot.predictors.gated import SCHEDULE_CHOICES

    total = 0.0
    for n in counts:
        budgets = sum(budget_computes(t, n) for t in config.targets)
        masks = 2 if n == config.steps and not config.taylor_masks else 1
        total += config.search_samples * (n + len(SCHEDULE_CHOICES) * budgets * masks)
    return total


def _policy(config) -> float:
    """PPO (SB3 learns whole rollouts: the timesteps rounded up to rollouts of all envs), the episodes each started
    with a full-compute reference, a uniform schedule at its budget and the episode itself at most at the highest
    target's budget; the warm start's episodes likewise; the held-out evaluation's references and runs, the
    searched schedules' runs it compares them with (at most at their budgets)."""
    from cachepilot.train.fit import policy_config

    policy = policy_config(config, predictor="learned", prior="")
    counts = policy.step_counts
    longest, high = max(counts), max(policy.targets)
    episode = longest + 2 * budget_computes(high, longest)
    per_rollout = policy.rollout_steps * policy.num_envs
    timesteps = math.ceil(policy.total_timesteps / per_rollout) * per_rollout
    per_env = timesteps // policy.num_envs
    episodes = policy.num_envs * (1 + per_env // min(counts))  # the first reset, then one per finished episode
    warm = policy.warm_start_episodes * policy.num_envs if policy.warm_start else 0
    evaluations, last = 0, 0
    for n in range(policy.num_envs, timesteps + 1, policy.num_envs):
        if n - last >= policy.eval_every:
            evaluations, last = evaluations + 1, n
    runs = policy.eval_samples * sum(budget_computes(t, n) for t in policy.eval_targets for n in counts)
    # references; the periodic evaluations and the final one; the searched schedules once (the same seeds)
    held_out = policy.eval_samples * sum(counts) + (evaluations + 1) * runs + runs
    return (episodes + warm) * episode + held_out


def _bench(config) -> float:
    """The methods of `bench.fit_report.bench_checkpoint`, each timed `repeats` times beside full compute, after a
    2-step warm-up of the hooked and the twin pipeline."""
    steps, samples, targets = config.steps, config.bench_samples, sorted(config.targets)
    intervals = sorted({max(2, round(1 / t)) for t in targets})
    budgets = sum(budget_computes(t, steps) for t in targets)
    fixed = sum(math.ceil(steps / n) for n in intervals)
    # always, learned-policy and searched-schedule (at most their budgets), fixed with Taylor-2 / the learned
    # head / the gated head, fewer steps
    methods = steps + 2 * budgets + 3 * fixed + sum(max(1, round(t * steps)) for t in targets)
    jobs = 1 + 2 * len(targets) + 3 * len(intervals) + len(targets)
    warm_up = 2 * min(samples, config.batch_size) * 2
    return warm_up + config.bench_repeats * samples * (2 * steps + jobs * steps + methods)


def _lean_bench(config) -> float:
    """The lean fit's bench (`bench.fit_report`, unpaired): a 2-step warm-up, one full-compute reference, then each
    method once per repeat: the searched schedules (at most their budgets), fixed intervals with Taylor-2, fewer
    steps."""
    steps, samples, targets = config.steps, config.bench_samples, sorted(config.targets)
    intervals = sorted({max(2, round(1 / t)) for t in targets})
    fixed = sum(math.ceil(steps / n) for n in intervals)
    methods = sum(budget_computes(t, steps) for t in targets) + fixed + sum(max(1, round(t * steps)) for t in targets)
    return 2 * min(samples, config.batch_size) + samples * (steps + config.bench_repeats * methods)


def _lean_rows(config) -> list[tuple[str, float, bool, str]]:
    from cachepilot.train.lean import LEAN_FORECASTERS, lean_evaluations

    search = lean_evaluations(config.steps, list(config.targets), config.search_samples)
    return [("schedules", search, True, f"references, every start mask, {len(LEAN_FORECASTERS) - 1} more "
                                        "forecasters on the chosen masks"),
            ("bench", _lean_bench(config), True, "searched methods at most at their budgets")]


def gate_counts(config) -> list[int]:
    """The step counts the forecaster gate is calibrated at."""
    return sorted(set(config.gate_steps or [config.steps, *(config.policy_steps or []), 20, 50, 100]))


def policy_gate_counts(config) -> list[int]:
    """The step counts the learned policy's schedules are scored as wholes at: the policy's and the gate's."""
    return sorted(set(config.policy_steps or [config.steps]) | set(gate_counts(config)))


def plan_fit(config, pipe=None, condition: dict | None = None, probe: Probe | None = None,
             num_conditions: int = 0, seconds_per_evaluation: float | None = None,
             copies: float | None = None) -> FitPlan:
    """Per stage, the evaluations `config` will spend and their wall time. With `pipe` (and a `condition`) the
    seconds per evaluation and the guidance copies come from a probe call; else from `probe`, or are given
    (`seconds_per_evaluation`, an assumption, and `copies`, default 1). num_conditions: the distinct conditions
    the fit checks with a 1-step call each before any stage."""
    if probe is None and pipe is not None:
        probe = probe_pipeline(pipe, config.call_kwargs, condition if condition is not None else {},
                               min(PROBE_BATCH, config.batch_size))
    assumed = probe is None and seconds_per_evaluation is not None
    if probe is not None:
        seconds_per_evaluation, copies = probe.seconds_per_evaluation, probe.copies
    copies = 1.0 if copies is None else copies
    check = ("check", num_conditions + 2 * PROBE_STEPS * (probe.batch if probe is not None else 1), False,
             "a 1-step call per condition (a fresh fit), the probe")
    if config.recipe == "lean":
        stages = [StagePlan(name, float(count * copies), bound, note)
                  for name, count, bound, note in [check, *_lean_rows(config)]]
        return FitPlan(stages, seconds_per_evaluation, copies, assumed, asdict(probe) if probe is not None else None)
    steps = config.steps
    collect, collect_bound = _collect(config.collect_policies, config.collect_samples, steps)
    dagger, dagger_bound = _collect(config.dagger_policies, config.collect_samples, steps, sensitivity=False)
    rows = [
        check,
        ("collect", collect, collect_bound, "step sensitivity + trajectories (cached ones also run bypassed)"),
        ("predictors", dagger, dagger_bound, "the DAgger round's collection (round 0's step weights reused)"),
        ("gate", _gate(config, gate_counts(config)), False, f"at {gate_counts(config)} steps"),
        ("schedules", _search(config, steps) + (_mask_choice(config, steps) if config.taylor_masks else 0.0), True,
         "search sweeps stop early when no move helps" + ("; Taylor-1's masks beside the head's"
                                                          if config.taylor_masks else "")),
        ("policy", _policy(config), True, "PPO episodes at the highest target's budget"),
        ("policy_gate", _policy_gate(config, policy_gate_counts(config)), True, "a learned policy at most at its budget"),
        ("bench", _bench(config), True, "learned / searched methods at most at their budgets"),
    ]
    stages = [StagePlan(name, float(count * copies), bound, note) for name, count, bound, note in rows]
    return FitPlan(stages, seconds_per_evaluation, copies, assumed,
                   asdict(probe) if probe is not None else None)
