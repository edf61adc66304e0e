"""Score schedules against full-compute references, each evaluation spent once: a candidate that agrees with an
incumbent up to step k forks from the incumbent's run at k instead of sampling the first k steps again.

A schedule search's moves each shift one compute of the incumbent mask, so a move at step s leaves steps < min(s,
new) as they were. `MaskScorer.forks(incumbent, ...)` samples the incumbent once, recording the transformer's output
at every call and the cache engine's state at the steps the candidates fork at (`runtime.snapshot`); a candidate's
call then hands the pipeline the recorded outputs up to its fork (no block runs: nothing to count), puts the
engine's state of that step back and runs the rest. The pipeline's own loop runs unchanged around it (scheduler,
guidance, callbacks), so the result is the full run's, bit for bit on a deterministic device; on the scenes model
at 50 steps a sweep then costs about half the evaluations.

Valid for a fixed schedule and a forecaster whose forecast at a step depends on the history and the step only
(`Predictor.causal`: not a gate whose choice depends on the whole schedule); anything else is scored in full.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from cachepilot.driver import SamplingDriver, caching
from cachepilot.policies.baselines import Schedule
from cachepilot.predictors.spec import make_predictor
from cachepilot.quality import psnr, psnr_per_image
from cachepilot.runtime import snapshot
from cachepilot.runtime.hooks import DEFAULT_CONTEXT, get_engine

REPLAY_HOOK = "cachepilot_replay"


def fork_step(incumbent: list[bool], candidate: list[bool]) -> int:
    """The first step at which the two masks differ (their length when equal)."""
    return next((s for s, (a, b) in enumerate(zip(incumbent, candidate)) if a != b), len(incumbent))


class _CallTracker:
    """Which pipeline call and denoising step a transformer call belongs to: a new call after the driver resets the
    transformer's hooks (before every pipeline call) or when the scheduler has new `timesteps` (as the engine knows
    it), a new step by the first cache context of the call coming round again (true CFG runs its "cond" and "uncond"
    contexts once each per step)."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.call, self.step, self.index = -1, -1, -1
        self._timesteps: Any = None
        self._leader: str | None = None
        self._reset = True

    def reset(self) -> None:
        self._reset = True

    def next(self, engine) -> tuple[int, int, int, bool]:
        """(pipeline call, step, this call's index within its pipeline call, first call of its step)."""
        timesteps = getattr(self.pipe.scheduler, "timesteps", None)
        if self._reset or timesteps is not self._timesteps:
            self.call, self.step, self.index, self._timesteps, self._leader = self.call + 1, -1, -1, timesteps, None
            self._reset = False
        context = engine.state_manager._context
        name = (context or DEFAULT_CONTEXT).name
        self._leader = self._leader or name
        first = name == self._leader
        self.step += first
        self.index += 1
        return self.call, self.step, self.index, first


@dataclass
class _Recording:
    outputs: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))  # pipeline call -> outputs
    snapshots: dict[tuple[int, int], snapshot.EngineSnapshot] = field(default_factory=dict)  # (call, step) ->


class _TrackingHook(ModelHook):
    _is_stateful = True  # reset by the driver before each pipeline call: the tracker's sign of a new call

    def __init__(self, pipe: Any):
        super().__init__()
        self.tracker = _CallTracker(pipe)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.tracker.reset()
        return module


class _RecordHook(_TrackingHook):
    """On the transformer of the incumbent's run: its outputs (the calls before the last fork) and the engine's
    state at the first call of each fork step."""

    def __init__(self, pipe: Any, steps: set[int], recording: _Recording):
        super().__init__(pipe)
        self.steps, self.recording = steps, recording
        self.last = max(steps, default=0)

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        engine = get_engine(module)
        call, step, _, first = self.tracker.next(engine)
        if first and step in self.steps:
            self.recording.snapshots[call, step] = snapshot.take(engine)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if step < self.last:
            self.recording.outputs[call].append(snapshot.copy_to(output, _device(output)))
        return output


class _ReplayHook(_TrackingHook):
    """On the transformer of a candidate's run: the recorded outputs before `step`, the recorded engine state at
    it, the real model from it on."""

    def __init__(self, pipe: Any, step: int, recording: _Recording):
        super().__init__(pipe)
        self.step, self.recording = step, recording

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        engine = get_engine(module)
        call, step, index, first = self.tracker.next(engine)
        if step < self.step:
            recorded = self.recording.outputs[call][index]
            return snapshot.copy_to(recorded, _device(recorded))  # the pipeline may change its output in place
        if step == self.step and first:
            snapshot.restore(engine, self.recording.snapshots[call, step], self.tracker.pipe.scheduler.timesteps)
        return self.fn_ref.original_forward(*args, **kwargs)


def _one_engine(pipe: Any) -> bool:
    """The pipeline's transformer is the one cached model (Wan 2.2's second expert keeps state of its own, which
    this module does not replay)."""
    engine = get_engine(pipe.transformer)
    others = [m for name, m in getattr(pipe, "components", {}).items()
              if name != "transformer" and isinstance(m, torch.nn.Module) and get_engine(m) is not None]
    return engine is not None and engine.state_manager is not None and not others


def _device(output: Any) -> torch.device:
    tensor = output if isinstance(output, torch.Tensor) else next(
        (v for v in (output.values() if isinstance(output, dict) else output) if isinstance(v, torch.Tensor)), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class _Hooked:
    """`hook` outermost on the pipeline's transformer for the block (inside a `caching` block)."""

    def __init__(self, pipe: Any, hook: ModelHook):
        self.registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
        self.hook = hook

    def __enter__(self) -> None:
        self.registry.register_hook(self.hook, REPLAY_HOOK)

    def __exit__(self, *exc) -> None:
        self.registry.remove_hook(REPLAY_HOOK, recurse=False)


class MaskScorer:
    """`score(mask, forecaster)`: mean PSNR of the cached samples against full compute over `count` samples
    (condition (first + i) mod len(conditions), seed `seed + i`); the references are sampled once, here."""

    def __init__(self, driver: SamplingDriver, conditions: list[dict], first: int, count: int, seed: int):
        self.driver = driver
        self.conditions = [conditions[(first + i) % len(conditions)] for i in range(count)]
        self.seeds = [seed + i for i in range(count)]
        self.reference = driver.sample(self.conditions, self.seeds).images

    def _sample(self, mask: list[bool], forecaster: Any) -> torch.Tensor:
        with caching(self.driver.pipe, Schedule(mask), forecaster):
            return self.driver.sample(self.conditions, self.seeds).images

    def score(self, mask: list[bool], forecaster: Any) -> float:
        return psnr(self._sample(mask, forecaster), self.reference)

    def per_sample(self, mask: list[bool], forecaster: Any) -> list[float]:
        """Each sample's PSNR (their mean is `score`): for paired comparisons of forecasters on one mask."""
        return psnr_per_image(self._sample(mask, forecaster), self.reference).tolist()

    def forks(self, incumbent: list[bool], forecaster: Any, candidates: list[list[bool]]) -> "Forks":
        """Samples `incumbent` once, recording what `candidates` fork from; `Forks.score(candidate)` then runs each
        from its fork step on. A forecaster that is not causal: every candidate is scored in full."""
        forecaster = make_predictor(forecaster) if isinstance(forecaster, str) else forecaster  # a spec: its causality
        if not getattr(forecaster, "causal", True):
            return Forks(self, incumbent, forecaster, None, None)
        steps = {fork_step(incumbent, c) for c in candidates} - {0, len(incumbent)}
        recording = _Recording()
        with caching(self.driver.pipe, Schedule(incumbent), forecaster):
            if not _one_engine(self.driver.pipe):
                return Forks(self, incumbent, forecaster, None, None)
            with _Hooked(self.driver.pipe, _RecordHook(self.driver.pipe, steps, recording)):
                images = self.driver.sample(self.conditions, self.seeds).images
        return Forks(self, incumbent, forecaster, recording, psnr(images, self.reference))


@dataclass
class Forks:
    """Candidates scored from the incumbent's recorded run (`MaskScorer.forks`)."""

    scorer: MaskScorer
    incumbent: list[bool]
    forecaster: Any
    recording: _Recording | None
    incumbent_score: float | None

    def score(self, candidate: list[bool]) -> float:
        step = fork_step(self.incumbent, candidate)
        if self.recording is None or step == 0:
            return self.scorer.score(candidate, self.forecaster)
        if step == len(candidate):
            return self.incumbent_score
        pipe = self.scorer.driver.pipe
        with caching(pipe, Schedule(candidate), self.forecaster):
            with _Hooked(pipe, _ReplayHook(pipe, step, self.recording)):
                images = self.scorer.driver.sample(self.scorer.conditions, self.scorer.seeds).images
        return psnr(images, self.scorer.reference)
