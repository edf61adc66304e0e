"""What `cachepilot generate` and `cachepilot evaluate` do, callable from Python too."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import cachepilot
from cachepilot.errors import InvalidInputError
from cachepilot.policies.spec import make_policy
from cachepilot.predictors.spec import make_predictor
from cachepilot.quality import psnr
from cachepilot.embedded.digits.loading import load_classifier, load_pipeline
from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE
from cachepilot.embedded.digits.metrics import class_accuracy, frechet_distance
from cachepilot.embedded.digits.sampling import image_grid, sample_images
from cachepilot.embedded.digits.data import load_digits_split

console = Console()


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be >= 1, got {batch_size}")


def _timed_sample(pipe, classes, seed, steps, guidance, batch_size) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    images = sample_images(pipe, classes, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                           batch_size=batch_size)
    return images, time.perf_counter() - start


def generate(
    classes: Sequence[int], out: Path, checkpoint: Path | None = None, steps: int = 50,
    guidance: float | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
    policy: str | None = None, predictor: str | None = None,
) -> dict:
    """Sample one image per class id and write the grid; print and return wall times.

    With a cache `policy`, the same seeds are also run with full compute so the speed-up and
    the fidelity (PSNR vs. full compute) are printed side by side.
    """
    _check_batch_size(batch_size)
    guidance = DEFAULT_GUIDANCE_SCALE if guidance is None else guidance
    policy_obj = make_policy(policy) if policy is not None else None
    predictor_obj = make_predictor(predictor)
    pipe = load_pipeline(checkpoint, device=device)
    pipe.check_inputs(classes, steps, guidance)
    pipe.set_progress_bar_config(disable=True)
    sample_images(pipe, classes[:1], seed=seed, num_inference_steps=2, guidance_scale=guidance)  # warm-up
    pipe.set_progress_bar_config(disable=False, desc="denoising", leave=False)
    images, wall = _timed_sample(pipe, classes, seed, steps, guidance, batch_size)
    result = {"images": len(classes), "steps": steps, "guidance": guidance, "full_wall_s": wall,
              "full_ms_per_step": 1000 * wall / steps}
    line = f"full compute: {wall:.3f} s wall ({result['full_ms_per_step']:.2f} ms/step)"
    if policy_obj is not None:
        reference = images
        cachepilot.enable(pipe, policy_obj, predictor_obj)
        try:
            images, cached_wall = _timed_sample(pipe, classes, seed, steps, guidance, batch_size)
            stats = cachepilot.last_stats(pipe)
        finally:
            cachepilot.disable(pipe)
        result.update(policy=policy_obj.spec(), predictor=predictor_obj.spec(), cached_wall_s=cached_wall,
                      speedup=wall / cached_wall, compute_fraction=stats.compute_fraction,
                      psnr=psnr(images, reference))
        line = (f"{policy_obj.spec()} + {predictor_obj.spec()}: {cached_wall:.3f} s wall, compute fraction "
                f"{stats.compute_fraction:.2f}, speed-up x{result['speedup']:.2f} vs. {line}; "
                f"PSNR vs. full compute {result['psnr']:.2f} dB")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images).save(out)
    console.print(f"generated {len(classes)} images, {steps} steps, guidance {guidance:g}; {line} -> {out}")
    return result


def evaluate(
    samples_per_class: int = 50, checkpoint: Path | None = None, steps: int = 50,
    guidance: float | None = None, seed: int = 10_000, batch_size: int = 256, device: str = "cpu",
    json_path: Path | None = None,
) -> dict:
    """Class accuracy and Fréchet distance (vs. held-out real digits) of balanced generated samples."""
    if samples_per_class < 2:
        raise InvalidInputError(f"samples per class must be >= 2 (a Fréchet distance needs a covariance), got {samples_per_class}")
    _check_batch_size(batch_size)
    guidance = DEFAULT_GUIDANCE_SCALE if guidance is None else guidance
    pipe = load_pipeline(checkpoint, device=device)
    pipe.check_inputs([0], steps, guidance)
    pipe.set_progress_bar_config(desc=f"sampling {10 * samples_per_class} digits", leave=False)
    classifier = load_classifier(device=device)
    split = load_digits_split()
    labels = torch.arange(10).repeat_interleave(samples_per_class)
    start = time.perf_counter()
    images = sample_images(pipe, labels.tolist(), seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                           batch_size=batch_size)
    wall = time.perf_counter() - start
    result = {
        "samples": len(labels), "steps": steps, "guidance": guidance, "seed": seed, "wall_s": wall,
        "class_acc": class_accuracy(classifier, images, labels),
        "fd_generated_vs_held_out": frechet_distance(classifier, images, split.held_out_images),
        "fd_train_vs_held_out": frechet_distance(classifier, split.train_images, split.held_out_images),
        "classifier_held_out_acc": class_accuracy(classifier, split.held_out_images, split.held_out_labels),
    }
    table = Table(title=f"{len(labels)} samples, {steps} steps, guidance {guidance:g}")
    for key in ("class_acc", "fd_generated_vs_held_out", "fd_train_vs_held_out", "classifier_held_out_acc", "wall_s"):
        table.add_row(key, f"{result[key]:.4f}")
    console.print(table)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result


def bench(
    out: Path, samples: int = 64, steps: int = 50, guidance: float | None = None, batch_size: int = 64,
    repeats: int = 3, seed: int = 20_000, methods: Sequence[str] | None = None, checkpoint: Path | None = None,
) -> list[dict]:
    """Sweep every method over its knob (see `cachepilot.bench`) and write the report to `out`."""
    from cachepilot.bench.methods import all_methods
    from cachepilot.bench.report import markdown_table, write_report
    from cachepilot.bench.runner import BenchConfig, overhead_fraction, run_bench

    for name, value in (("samples", samples), ("steps", steps), ("batch size", batch_size), ("repeats", repeats)):
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    if samples < 2:
        raise InvalidInputError("samples must be >= 2 (a Fréchet distance needs a covariance)")
    guidance = DEFAULT_GUIDANCE_SCALE if guidance is None else guidance
    available = all_methods(steps)
    if methods:
        unknown = sorted(set(methods) - {m.name for m in available})
        if unknown:
            raise InvalidInputError(f"unknown bench method(s) {unknown}; available: {[m.name for m in available]}")
        available = [m for m in available if m.name in methods]
    pipe = load_pipeline(checkpoint)
    pipe.check_inputs([0], steps, guidance)
    config = BenchConfig(samples=samples, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size,
                         repeats=repeats)
    from cachepilot.embedded.digits.metrics import digits_quality

    quality = digits_quality(load_classifier(), load_digits_split().held_out_images)
    rows = run_bench(pipe, available, config, quality=quality)
    meta = {"samples": samples, "steps": steps, "guidance": guidance, "batch": batch_size, "repeats": repeats,
            "threads": torch.get_num_threads()}
    write_report(rows, out, meta)
    console.print(markdown_table(rows))
    overhead = overhead_fraction(rows)
    if overhead:
        worst = max(overhead, key=overhead.get)
        console.print(f"policy + predictor time per step / one stack evaluation: max {overhead[worst]:.3%} ({worst})")
    console.print(f"wrote {out}/results.json, results.md, pareto.png")
    return rows
