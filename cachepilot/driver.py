"""One sampling driver for any diffusers pipeline.

Every consumer on the learning side (the gym env, the reference store, collection, step
sensitivity, the schedule search, the oracle, the bench) samples through the pipeline's *own*
`__call__`: each family's preprocessing, CFG layout, scheduler and latent packing stay the
pipeline's. Per-sample conditions (prompts, class ids, ...) become one batched call with one
noise generator per sample, so a sample depends only on its seed and condition, never on its batch.

Two ways to drive a call:
- `sample`: one call to the end (optionally recording the latents after every step through
  `callback_on_step_end`);
- `stepped`: the call runs in a worker thread and stops at each step's decision point: the
  engine's policy is a `SteppedActions` bridge that hands the observation out and blocks until
  the agent's actions come in. An env step is therefore exactly a runtime step.
"""

from __future__ import annotations

import copy
import inspect
import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cachepilot.conditions import batch_call_kwargs, group_by_shared
from cachepilot.errors import CachepilotError, InvalidInputError
from cachepilot.core.policy import CachePolicy
from cachepilot.policies.external import SteppedActions, SteppingAborted
from cachepilot.runtime.hooks import get_engine, reset_cache
from cachepilot.core.observation import Observation
from cachepilot.runtime.stats import CacheStats


@dataclass
class SampleResult:
    """images: (N, C, H, W) (video: (N, F, C, H, W)) float in [0, 1], on the CPU;
    latents: the final latents as the pipeline's step callback saw them;
    trajectory: (N, T, ...) latents after every step (when recorded); stats: ours, when hooked."""

    images: torch.Tensor
    latents: torch.Tensor
    trajectory: torch.Tensor | None = None
    stats: CacheStats | None = None


def images_to_tensor(output: Any) -> torch.Tensor:
    """A pipeline's `output_type="np"` images (N, H, W, C) or frames (N, F, H, W, C) as channels-first floats."""
    images = output.images if hasattr(output, "images") else output.frames if hasattr(output, "frames") else output[0]
    array = np.asarray(images, dtype=np.float32) if not isinstance(images, torch.Tensor) else images.float().cpu()
    tensor = torch.as_tensor(array)
    return tensor.movedim(-1, -3).contiguous()


def noise_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """CPU generators: the same noise for a seed on every device (diffusers moves it)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def unhooked_twin(pipe: Any) -> Any:
    """An independent full-compute copy of a pipeline (own transformer and scheduler, no cachepilot hooks,
    no progress bar), sharing the other components: timings and references run beside a hooked pipeline."""
    source = pipe.transformer  # rebuilt from config + weights: hooks (and their locks, queues) stay behind
    transformer = type(source).from_config(source.config)
    transformer.load_state_dict(source.state_dict())
    if transformer.dtype != source.dtype:
        transformer.to(dtype=source.dtype)
    transformer.to(source.device).eval()
    twin = type(pipe).from_pipe(pipe, transformer=transformer, scheduler=copy.deepcopy(pipe.scheduler))
    twin.set_progress_bar_config(disable=True)
    return twin


@contextmanager
def caching(pipe: Any, policy: CachePolicy | str | None = None, predictor: Any = None):
    """Run the block with `policy` (None: full compute) on `pipe`: swapped into its engine when cachepilot
    already hooks it (the env's pipeline), enabled and removed again otherwise."""
    import cachepilot
    from cachepilot.policies.spec import make_policy
    from cachepilot.predictors.spec import make_predictor

    engine = get_engine(pipe.transformer)
    if engine is None:
        if policy is None:
            yield
            return
        cachepilot.enable(pipe, policy, predictor)
        try:
            yield
        finally:
            cachepilot.disable(pipe)
        return
    old_policy, old_predictor = engine.policy, engine.predictor
    engine.policy = make_policy(policy if policy is not None else "always")
    engine.policy.bind(pipe.transformer)
    if predictor is not None:
        engine.predictor = make_predictor(predictor)
        engine.predictor.bind(pipe.transformer)
    try:
        yield
    finally:
        engine.policy, engine.predictor = old_policy, old_predictor


def check_num_steps(pipe: Any, num_steps: int) -> None:
    """Steps beyond the scheduler's training timesteps: the scheduler's ValueError, as one line up front."""
    config = getattr(getattr(pipe, "scheduler", None), "config", None)
    limit = getattr(config, "num_train_timesteps", None) if config is not None else None
    if isinstance(limit, int) and num_steps > limit:
        raise InvalidInputError(f"num_inference_steps must be at most the scheduler's num_train_timesteps "
                                f"({limit}), got {num_steps}")


class SamplingDriver:
    """pipe: any diffusers pipeline (cachepilot hooks optional); num_steps: denoising steps of every call;
    call_kwargs: kwargs shared by every call (height, width, guidance_scale, max_sequence_length, ...)."""

    def __init__(self, pipe: Any, num_steps: int, call_kwargs: dict | None = None, batch_size: int = 64):
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InvalidInputError(f"num_inference_steps must be an integer >= 1, got {num_steps!r}")
        if batch_size < 1:
            raise InvalidInputError(f"batch size must be >= 1, got {batch_size}")
        check_num_steps(pipe, num_steps)
        self.pipe, self.num_steps, self.batch_size = pipe, num_steps, batch_size
        self.call_kwargs = dict(call_kwargs or {})
        pipe.set_progress_bar_config(disable=True)

    # -- one call ----------------------------------------------------------------------------
    def kwargs_for(self, conditions: Sequence[dict], seeds: Sequence[int]) -> dict:
        if len(conditions) != len(seeds):
            raise InvalidInputError(f"{len(conditions)} conditions for {len(seeds)} seeds")
        kwargs = {**self.call_kwargs, **batch_call_kwargs(list(conditions))}
        kwargs.update(generator=noise_generators(seeds), num_inference_steps=self.num_steps, output_type="np")
        return kwargs

    @torch.no_grad()
    def sample(self, conditions: Sequence[dict], seeds: Sequence[int], trajectory: bool = False) -> SampleResult:
        """Sample `conditions[i]` with seed `seeds[i]` through the pipeline's `__call__`, in batches of at most
        `batch_size` samples that share their call-wide kwargs; results come back in input order."""
        if len(conditions) != len(seeds):
            raise InvalidInputError(f"{len(conditions)} conditions for {len(seeds)} seeds")
        order, parts = [], []
        for group in group_by_shared(conditions):
            for i in range(0, len(group), self.batch_size):
                rows = group[i:i + self.batch_size]
                order += rows
                parts.append(self._sample_batch([conditions[r] for r in rows], [seeds[r] for r in rows], trajectory))
        if len(parts) == 1:
            return parts[0]
        inverse = torch.argsort(torch.tensor(order))
        return SampleResult(
            torch.cat([p.images for p in parts])[inverse], torch.cat([p.latents for p in parts])[inverse],
            torch.cat([p.trajectory for p in parts])[inverse] if trajectory else None, parts[-1].stats)

    @contextmanager
    def tapped(self, samples: int, on_latents: Callable[[torch.Tensor], None]):
        """Extra call kwargs that hand the latents after every step to `on_latents`, and tell the engine how
        many samples the call holds (so CFG copies share decisions whatever the family's batch layout).

        `callback_on_step_end` where the pipeline has it, the legacy `callback` (PixArt) otherwise, and as a
        last resort a wrapper of the pipeline's `scheduler.step` (DiTPipeline has no callback at all)."""

        def take(latents: torch.Tensor) -> None:
            latents = latents.detach()
            if latents.shape[0] > samples:  # a pipeline stepping [cond; uncond] copies (DiTPipeline)
                latents = latents[:samples]
            on_latents(latents.float().cpu().clone())

        params = inspect.signature(type(self.pipe).__call__).parameters
        scheduler, kwargs = None, {}
        if "callback_on_step_end" in params:
            def on_step_end(pipe, step, timestep, callback_kwargs):
                take(callback_kwargs["latents"])
                return callback_kwargs

            kwargs = {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": ["latents"]}
        elif "callback" in params and "callback_steps" in params:
            kwargs = {"callback": lambda step, timestep, latents: take(latents), "callback_steps": 1}
        else:
            scheduler = self.pipe.scheduler
            original = scheduler.step

            def step(*args, **step_kwargs):
                out = original(*args, **step_kwargs)
                take(out[0] if isinstance(out, tuple) else out.prev_sample)
                return out

            scheduler.step = step  # an instance attribute: deleting it restores the class's method
        engine = get_engine(self.pipe.transformer)
        if engine is not None:
            engine.samples_hint = samples
        try:
            yield kwargs
        finally:
            if scheduler is not None:
                del scheduler.step
            if engine is not None:
                engine.samples_hint = None

    def _sample_batch(self, conditions, seeds, trajectory: bool) -> SampleResult:
        states: list[torch.Tensor] = []
        reset_cache(self.pipe.transformer)  # a fresh state whatever happened to the last call
        with self.tapped(len(conditions), states.append) as tap:
            output = self.pipe(**self.kwargs_for(conditions, seeds), **tap)
        if not states:
            raise CachepilotError(f"{type(self.pipe).__name__} gave no latents after its steps")
        engine = get_engine(self.pipe.transformer)
        return SampleResult(images_to_tensor(output), states[-1],
                            torch.stack(states, 1) if trajectory else None,
                            engine.last_stats if engine is not None else None)

    def stepped(self, conditions: Sequence[dict], seeds: Sequence[int]) -> "SteppedCall":
        """A call that advances one step at a time (the pipeline must be hooked with a `SteppedActions` policy)."""
        return SteppedCall(self, conditions, seeds)


class SteppedCall:
    """`pipe(...)` in a worker thread, paused at every decision point.

    `start()` -> the first step's observation; `step(actions)` -> (latents after the step, the next
    observation or None once the call has ended); `result` holds the call's `SampleResult` at the end.
    `close()` aborts a call still running (the worker unwinds through the pipeline, the next call starts
    from a clean state)."""

    def __init__(self, driver: SamplingDriver, conditions: Sequence[dict], seeds: Sequence[int]):
        engine = get_engine(driver.pipe.transformer)
        if engine is None or not isinstance(engine.policy, SteppedActions):
            raise CachepilotError("a stepped call needs the pipeline hooked with a SteppedActions policy")
        self.driver, self.bridge = driver, engine.policy
        self.kwargs, self.samples = driver.kwargs_for(conditions, seeds), len(conditions)
        self.outbox: queue.Queue = queue.Queue()
        self.result: SampleResult | None = None
        self.step_index = 0
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        last: list[torch.Tensor] = []

        def on_latents(latents: torch.Tensor) -> None:
            last[:] = [latents]
            self.outbox.put(("latents", latents))

        try:
            with torch.no_grad(), self.driver.tapped(self.samples, on_latents) as tap:
                output = self.driver.pipe(**self.kwargs, **tap)
            engine = get_engine(self.driver.pipe.transformer)
            self.outbox.put(("done", SampleResult(images_to_tensor(output), last[0] if last else None, None,
                                                  engine.last_stats if engine is not None else None)))
        except SteppingAborted:
            self.outbox.put(("aborted", None))
        except BaseException as err:  # handed to the caller's thread
            self.outbox.put(("error", err))

    def _receive(self, *kinds: str) -> Any:
        kind, value = self.outbox.get()
        if kind == "error":
            self._thread.join()
            self._thread = None
            raise value
        if kind not in kinds:
            raise RuntimeError(f"stepped call: expected {kinds}, got {kind}")
        return kind, value

    def start(self) -> Observation:
        reset_cache(self.driver.pipe.transformer)
        self.bridge.new_call(self.outbox)
        self._thread = threading.Thread(target=self._run, name="cachepilot-stepped-call", daemon=True)
        self._thread.start()
        _, obs = self._receive("obs")
        return obs

    @property
    def running(self) -> bool:
        return self._thread is not None

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, Observation | None]:
        if not self.running:
            raise RuntimeError("step called before start() or after the call ended")
        self.bridge.inbox.put(actions)
        _, latents = self._receive("latents")
        self.step_index += 1
        kind, value = self._receive("obs", "done")
        if kind == "done":
            self.result = value
            self._thread.join()
            self._thread = None
            return latents, None
        return latents, value

    def close(self) -> None:
        """Abort the call if it still runs (env reset mid-episode, interruption)."""
        if self._thread is None:
            return
        self.bridge.inbox.put(SteppingAborted)
        while True:
            kind, value = self.outbox.get()
            if kind in ("aborted", "done", "error"):
                break
        self._thread.join()
        self._thread = None
        reset_cache(self.driver.pipe.transformer)
