"""Run every method over its knob on the same seeds and conditions and measure it against full compute.

Per (method, knob): compute fraction (block evaluations counted, not assumed), wall-clock
speed-up vs. full compute in the same process (medians of repeats, full compute timed alternately
with the method), PSNR / SSIM of each image vs. the full-compute image of the same seed and condition,
and, for the embedded digits model, class accuracy and Fréchet distance (reference classifier).
Any supported diffusers pipeline runs through the sampling driver, on the conditions it is given
(the evaluation split: never trained on).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

import cachepilot
from cachepilot.seeds import BENCH as BENCH_SEED
from cachepilot.bench.counting import BlockCounter
from cachepilot.bench.methods import Method
from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.conditions import load_conditions, pipeline_conditions, split_conditions
from cachepilot.driver import SamplingDriver, unhooked_twin
from cachepilot.embedded.base import embedded_for
from cachepilot.finite import check_finite
from cachepilot.quality import psnr, ssim
from cachepilot.runtime.adapters import get_adapter


@dataclass
class BenchConfig:
    samples: int = 64
    steps: int = 50
    guidance: float | None = 1.0
    seed: int = BENCH_SEED  # seeds not used by training or the demo
    batch_size: int = 64
    repeats: int = 3
    call_kwargs: dict = field(default_factory=dict)  # every call's kwargs beyond guidance (height, width, ...)
    paired: bool = True  # False: every method's speed-up against the one full-compute run timed first, instead
                         # of a full-compute run beside each (a fit's lean bench: half its evaluations or less)

    def driver(self, pipe) -> SamplingDriver:
        kwargs = {**self.call_kwargs, **({"guidance_scale": self.guidance} if self.guidance is not None else {})}
        return SamplingDriver(pipe, self.steps, kwargs, batch_size=self.batch_size)


def evaluation_conditions(pipe, prompts: str | Path | None = None,
                          cache: str | Path | None = None) -> tuple[list[dict], str]:
    """What the bench samples, and its source: the evaluation split of `prompts`, else an embedded pipeline's
    held-out conditions (the scenes' unseen colour/shape pairs), else the evaluation split a cache checkpoint
    recorded, else every class of a class-conditional pipeline (the seeds are held out)."""
    if prompts is not None:
        evaluation = split_conditions(load_conditions(prompts)).evaluation
        return list(evaluation.conditions), evaluation.source
    model = embedded_for(pipe)
    held_out = model.conditions() if model is not None else None
    if held_out is not None:
        return held_out, f"{model.name} held-out conditions"
    split = CacheCheckpoint.from_pretrained(cache).conditions() if cache is not None else None
    evaluation = split.evaluation if split is not None else pipeline_conditions(pipe)
    return list(evaluation.conditions), evaluation.source


def _conditions(conditions: list[dict], samples: int) -> list[dict]:
    return [conditions[i % len(conditions)] for i in range(samples)]  # balanced over the conditions


def _generate(pipe, method: Method | None, config: BenchConfig, conditions: list[dict]) -> tuple[torch.Tensor, float, int]:
    """Images, wall seconds, block rows evaluated for one pass over the seeds."""
    chosen = _conditions(conditions, config.samples)
    driver = config.driver(pipe)
    blocks = get_adapter(pipe.transformer).blocks(pipe.transformer)
    chunks, rows, wall = [], 0, 0.0
    for start in range(0, config.samples, config.batch_size):
        batch = chosen[start:start + config.batch_size]
        if method is not None:
            method.before_call(pipe)
        with BlockCounter(blocks) as counter:
            tic = time.perf_counter()
            chunks.append(driver.sample(batch, [config.seed + start + i for i in range(len(batch))]).images)
            wall += time.perf_counter() - tic
        rows += counter.rows
    return torch.cat(chunks), wall, rows


def _timed_pair(pipe, method, reference_pipe, config, conditions, method_config=None,
                full_wall: float | None = None) -> tuple[torch.Tensor, float, float, int]:
    """Images, median wall of the method, median wall of full compute timed alternately with it
    (on an unhooked twin of the pipeline), rows: a speed-up from runs made side by side, so drift in
    the machine's speed (other load, thermal, allocator warm-up) hits both alike. With `full_wall` given (an
    unpaired bench) full compute is not run again: that wall is returned."""
    walls, full_walls = [], [] if full_wall is None else [full_wall]
    for _ in range(config.repeats):
        if full_wall is None:
            full_walls.append(_generate(reference_pipe, None, config, conditions)[1])
        images, wall, rows = _generate(pipe, method, method_config or config, conditions)
        walls.append(wall)
    return images, statistics.median(walls), statistics.median(full_walls), rows


def run_bench(
    pipe, methods: list[Method], config: BenchConfig, conditions: list[dict] | None = None,
    quality=None, progress: bool = True, on_row: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """conditions: what each sample is sampled with (default: the digits classes, balanced); quality:
    `fn(images, conditions) -> dict` of model-specific figures per row (the digits classifier's); on_row: called
    with the rows so far after each one (a long sweep interrupted keeps what it measured)."""
    if conditions is None:
        conditions = [{"class_labels": i} for i in range(int(pipe.num_classes))]
    reference_pipe = unhooked_twin(pipe)
    chosen = _conditions(conditions, config.samples)
    warm_up = replace(config, samples=min(config.samples, config.batch_size), steps=2)
    _generate(pipe, None, warm_up, conditions)
    if config.paired:
        _generate(reference_pipe, None, warm_up, conditions)
        reference, _, full_wall, full_rows = _timed_pair(pipe, None, reference_pipe, config, conditions)
    else:  # one full-compute run: the reference and the one timing every method is compared with
        reference, full_wall, full_rows = _generate(pipe, None, config, conditions)
    check_finite(reference, f"the full-compute images of {type(pipe).__name__}")

    def row(method: str, knob, images, wall, full_wall, rows) -> dict:
        # before any metric: NaN features crash the Fréchet distance (MKL segfault), NaN PSNR is silent garbage
        check_finite(images, f"the images of bench method {method} (knob {knob})")
        return {
            "method": method, "knob": knob, "compute_fraction": rows / full_rows, "speedup": full_wall / wall,
            "wall_s": wall, "psnr": psnr(images, reference), "ssim": ssim(images, reference),
            **(quality(images, chosen) if quality is not None else {}),
        }

    results = [row("full", None, reference, full_wall, full_wall, full_rows)]
    jobs = [(m, k) for m in methods for k in m.knobs]
    failed: set[str] = set()
    for method, knob in tqdm(jobs, desc="bench", disable=not progress):
        if method.name in failed:
            continue
        # fewer-steps samples with its own step count; full compute is always timed at the full count
        own = config if method.steps_for is None else replace(config, steps=method.steps_for(knob, config.steps))
        try:
            used = method.apply(pipe, knob)
            try:
                images, wall, paired_wall, rows = _timed_pair(used, method, reference_pipe, config, conditions, own,
                                                              None if config.paired else full_wall)
                stats = cachepilot.last_stats(used)  # ours only: time in policy / predictor / stack
            finally:
                method.remove(used)
        except Exception as err:
            if method.family == "cachepilot":
                raise
            # a peer that does not run on this pipeline (no cache context, unsupported block) is left out,
            # said once, instead of ending the whole bench
            failed.add(method.name)
            warnings.warn(f"bench: {method.name} does not run on {type(pipe).__name__} and is left out: "
                          f"{type(err).__name__}: {err}".splitlines()[0], stacklevel=2)
            continue
        results.append(row(method.name, knob, images, wall, paired_wall, rows))
        if stats is not None:
            results[-1].update({f"{part}_ms_per_step": 1000 * getattr(stats, f"{part}_seconds") / stats.num_steps
                                for part in ("policy", "predictor", "stack")})
        if on_row is not None:
            on_row(_with_settings(results, config))
    return _with_settings(results, config)


def _with_settings(results: list[dict], config: BenchConfig) -> list[dict]:
    for r in results:
        r.update(samples=config.samples, steps=config.steps, guidance=config.guidance, batch_size=config.batch_size,
                 paired=config.paired)
    return results


def overhead_fraction(rows: list[dict]) -> dict[str, float]:
    """Per-step policy + predictor time of each of our rows, as a fraction of one full stack evaluation
    (the stack time per step of the engine's always-compute row)."""
    always = [r for r in rows if r["method"] == "always" and "stack_ms_per_step" in r]
    if not always:
        return {}
    stack = always[0]["stack_ms_per_step"]
    return {f"{r['method']}@{r['knob']}": (r["policy_ms_per_step"] + r["predictor_ms_per_step"]) / stack
            for r in rows if "policy_ms_per_step" in r}
