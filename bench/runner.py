"""Run every method over its knob on the same seeds and measure it against full compute.

Per (method, knob): compute fraction (block evaluations counted, not assumed), wall-clock
speed-up vs. full compute in the same process (medians of repeats, full compute timed alternately
with the method), PSNR / SSIM of each image vs.
the full-compute image of the same seed, class accuracy and Fréchet distance (reference classifier).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

import cachepilot
from cachepilot.bench.counting import BlockCounter
from cachepilot.bench.methods import Method
from cachepilot.classifier import DigitsClassifier
from cachepilot.pipeline import DigitsDiTPipeline
from cachepilot.quality import class_accuracy, frechet_distance, psnr, ssim
from cachepilot.sampling import sample_images
from cachepilot.train.digits_data import load_digits_split


@dataclass
class BenchConfig:
    samples: int = 64
    steps: int = 50
    guidance: float = 1.0
    seed: int = 20_000  # seeds not used by training or the demo
    batch_size: int = 64
    repeats: int = 3


def _labels(samples: int) -> list[int]:
    return [i % 10 for i in range(samples)]  # balanced classes


def _generate(pipe: DigitsDiTPipeline, method: Method | None, config: BenchConfig) -> tuple[torch.Tensor, float, int]:
    """Images, wall seconds, block rows evaluated for one pass over the seeds."""
    labels = _labels(config.samples)
    blocks = list(pipe.transformer.transformer_blocks)
    chunks, rows, wall = [], 0, 0.0
    for start in range(0, config.samples, config.batch_size):
        batch = labels[start:start + config.batch_size]
        if method is not None:
            method.before_call(pipe)
        with BlockCounter(blocks) as counter:
            tic = time.perf_counter()
            chunks.append(sample_images(pipe, batch, seed=config.seed + start, num_inference_steps=config.steps,
                                        guidance_scale=config.guidance, batch_size=config.batch_size))
            wall += time.perf_counter() - tic
        rows += counter.rows
    return torch.cat(chunks), wall, rows


def _timed_pair(pipe, method, reference_pipe, config, method_config=None) -> tuple[torch.Tensor, float, float, int]:
    """Images, median wall of the method, median wall of full compute timed alternately with it
    (on an unhooked twin of the pipeline), rows: a speed-up from runs made side by side, so drift in
    the machine's speed (other load, thermal, allocator warm-up) hits both alike."""
    walls, full_walls = [], []
    for _ in range(config.repeats):
        full_walls.append(_generate(reference_pipe, None, config)[1])
        images, wall, rows = _generate(pipe, method, method_config or config)
        walls.append(wall)
    return images, statistics.median(walls), statistics.median(full_walls), rows


def run_bench(
    pipe: DigitsDiTPipeline, classifier: DigitsClassifier, methods: list[Method], config: BenchConfig,
    progress: bool = True,
) -> list[dict]:
    pipe.set_progress_bar_config(disable=True)
    reference_pipe = pipe.unhooked_copy()
    labels = torch.tensor(_labels(config.samples))
    held_out = load_digits_split().held_out_images
    warm_up = BenchConfig(**{**config.__dict__, "samples": min(config.samples, config.batch_size), "steps": 2})
    _generate(pipe, None, warm_up)
    _generate(reference_pipe, None, warm_up)
    reference, _, full_wall, full_rows = _timed_pair(pipe, None, reference_pipe, config)

    def row(method: str, knob, images, wall, full_wall, rows) -> dict:
        return {
            "method": method, "knob": knob, "compute_fraction": rows / full_rows, "speedup": full_wall / wall,
            "wall_s": wall, "psnr": psnr(images, reference), "ssim": ssim(images, reference),
            "class_acc": class_accuracy(classifier, images, labels),
            "fd": frechet_distance(classifier, images, held_out),
        }

    results = [row("full", None, reference, full_wall, full_wall, full_rows)]
    jobs = [(m, k) for m in methods for k in m.knobs]
    for method, knob in tqdm(jobs, desc="bench", disable=not progress):
        used = method.apply(pipe, knob)
        # fewer-steps samples with its own step count; full compute is always timed at the full count
        own = config if method.steps_for is None else replace(config, steps=method.steps_for(knob, config.steps))
        try:
            images, wall, full_wall, rows = _timed_pair(used, method, reference_pipe, config, own)
            stats = cachepilot.last_stats(used)  # ours only: time in policy / predictor / stack
        finally:
            method.remove(used)
        results.append(row(method.name, knob, images, wall, full_wall, rows))
        if stats is not None:
            results[-1].update({f"{part}_ms_per_step": 1000 * getattr(stats, f"{part}_seconds") / stats.num_steps
                                for part in ("policy", "predictor", "stack")})
    for r in results:
        r.update(samples=config.samples, steps=config.steps, guidance=config.guidance, batch_size=config.batch_size)
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
