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
from cachepilot.finite import check_finite
from cachepilot.outputs import check_output_dir
from cachepilot.policies.spec import make_policy
from cachepilot.predictors.spec import make_predictor
from cachepilot.quality import psnr
from cachepilot.embedded.digits.loading import load_classifier, load_pipeline
from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE
from cachepilot.embedded.digits.metrics import class_accuracy, frechet_distance
from cachepilot.embedded.digits.sampling import image_grid, sample_images
from cachepilot.embedded.digits.data import load_digits_split
from cachepilot.embedded.quality import default_call_kwargs, default_conditions, embedded_quality

console = Console()


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be >= 1, got {batch_size}")


def generate(
    conditions: Sequence[dict], out: Path, pipeline: str | Path | None = None, steps: int = 50,
    call_kwargs: dict | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu",
    dtype: str | None = None, policy: str | None = None, predictor: str | None = None, cache: str | Path | None = None,
) -> dict:
    """Sample one image per condition (seed + i for image i) on any supported pipeline and write the grid;
    print and return wall times.

    With a cache `policy`, the same seeds are also run with full compute so the speed-up and the fidelity
    (PSNR vs. full compute) are printed side by side. policy "learned:TARGET" uses the shipped policy, or the
    `cache` directory's (a `cachepilot fit` output) with its learned forecaster.
    """
    from cachepilot.driver import SamplingDriver
    from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline
    from cachepilot.images import image_grid as any_image_grid
    from cachepilot.loading import load_pipeline as load_any_pipeline
    from cachepilot.outputs import check_output_file

    _check_batch_size(batch_size)
    if not conditions:
        raise InvalidInputError("nothing to generate: give at least one class or prompt")
    out = check_output_file(out)
    policy_obj, predictor_obj = _cache_policy(policy, predictor, cache)
    pipe = load_any_pipeline(pipeline, device=device, dtype=dtype)
    kwargs = dict(call_kwargs or default_call_kwargs(pipe))
    digits = isinstance(pipe, DigitsDiTPipeline)
    if digits:
        kwargs.setdefault("guidance_scale", DEFAULT_GUIDANCE_SCALE)
        pipe.check_inputs([c.get("class_labels", -1) for c in conditions], steps, kwargs["guidance_scale"])
    seeds = [seed + i for i in range(len(conditions))]
    SamplingDriver(pipe, 2, kwargs, batch_size).sample(list(conditions[:1]), seeds[:1])  # warm-up
    driver = SamplingDriver(pipe, steps, kwargs, batch_size)

    def timed() -> tuple[torch.Tensor, float]:
        tic = time.perf_counter()
        images = driver.sample(list(conditions), seeds).images
        return images, time.perf_counter() - tic

    images, wall = timed()
    check_finite(images, "the generated images (full compute; check the checkpoint's weights and the guidance "
                         "scale)")
    result = {"images": len(conditions), "steps": steps, "call_kwargs": kwargs, "full_wall_s": wall,
              "full_ms_per_step": 1000 * wall / steps}
    # the scenes' judge (digits: `evaluate` measures the model); a Fréchet distance needs two images
    quality = embedded_quality(pipe) if not digits and len(conditions) >= 2 else None
    if quality is not None:
        result["full_quality"] = quality(images, list(conditions))
    line = f"full compute: {wall:.3f} s wall ({result['full_ms_per_step']:.2f} ms/step{_quality_text(result, 'full')})"
    if policy_obj is not None:
        reference = images
        cachepilot.enable(pipe, policy_obj, predictor_obj)
        try:
            images, cached_wall = timed()
            stats = cachepilot.last_stats(pipe)
        finally:
            cachepilot.disable(pipe)
        check_finite(images, f"the generated images ({policy_obj.spec()} + {predictor_obj.spec()})")
        result.update(policy=policy_obj.spec(), predictor=predictor_obj.spec(), cached_wall_s=cached_wall,
                      speedup=wall / cached_wall, compute_fraction=stats.compute_fraction,
                      psnr=psnr(images, reference))
        if quality is not None:
            result["cached_quality"] = quality(images, list(conditions))
            reference_grid = any_image_grid(reference, scale=max(1, 128 // reference.shape[-1]))
            reference_grid.save(out.with_name(out.stem + "_full" + out.suffix))
        line = (f"{policy_obj.spec()} + {predictor_obj.spec()}: {cached_wall:.3f} s wall, compute fraction "
                f"{stats.compute_fraction:.2f}, speed-up x{result['speedup']:.2f}{_quality_text(result, 'cached')} "
                f"vs. {line}; PSNR vs. full compute {result['psnr']:.2f} dB")
    grid = image_grid(images) if digits else any_image_grid(images, scale=max(1, 128 // images.shape[-1]))
    grid.save(out)
    console.print(f"generated {len(conditions)} images, {steps} steps; {line} -> {out}", soft_wrap=True)
    return result


def _quality_text(result: dict, side: str) -> str:
    """", adherence 0.42" for an embedded pipeline's judge figures (none for users' pipelines)."""
    figures = result.get(f"{side}_quality") or {}
    return "".join(f", {name} {value:.3f}" for name, value in figures.items() if name in ("adherence", "attr_acc"))


def _cache_policy(policy: str | None, predictor: str | None, cache: str | Path | None):
    """(policy, predictor) objects; a learned policy comes from `cache` (a fit directory) when given."""
    if policy is None:
        return None, make_predictor(predictor)
    name, _, arg = policy.partition(":")
    if name == "learned" and cache is not None:
        from cachepilot.api import head_spec, resolve_checkpoint
        from cachepilot.policies.learned import LearnedPolicy

        policy_dir, predictor_dir = resolve_checkpoint(cache)
        target = float(arg) if arg else 0.3
        if predictor is None or predictor == "learned":  # the cache's head, gated once calibrated (as `enable` loads it)
            predictor = head_spec(predictor_dir) if predictor_dir is not None else "taylor:2"
        return LearnedPolicy(policy_dir, target=target), make_predictor(predictor)
    return make_policy(policy), make_predictor(predictor)


def evaluate(
    samples_per_class: int = 50, checkpoint: Path | None = None, steps: int = 50,
    guidance: float | None = None, seed: int = 10_000, batch_size: int = 256, device: str = "cpu",
    json_path: Path | None = None,
) -> dict:
    """Class accuracy and Fréchet distance (vs. held-out real digits) of balanced generated samples."""
    if samples_per_class < 2:
        raise InvalidInputError(f"samples per class must be >= 2 (a Fréchet distance needs a covariance), got {samples_per_class}")
    _check_batch_size(batch_size)
    if json_path is not None:
        from cachepilot.outputs import check_output_file

        json_path = check_output_file(json_path)  # before the sampling, not after it
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
    check_finite(images, f"the generated images ({steps} steps, guidance {guidance:g}; check the checkpoint's "
                         "weights and the guidance scale)")
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


def bench_conditions(pipe, prompts: str | Path | None, cache: Path | None) -> tuple[list[dict], str]:
    """What the bench samples: the evaluation split of --prompts, else the scenes pipeline's held-out prompts,
    else the evaluation split of the cache's recorded conditions, else every class of a class-conditional
    pipeline (with held-out seeds)."""
    from cachepilot.conditions import ConditionSplit, load_conditions, split_conditions
    from cachepilot.train.fit import _conditions_for

    if prompts is not None:
        evaluation = split_conditions(load_conditions(prompts)).evaluation
    elif default_conditions(pipe) is not None:  # the scenes pipeline: prompts of colour/shape pairs never trained on
        return default_conditions(pipe), "scenes held-out prompts (evaluation_prompts(256, seed=0))"
    elif cache is not None and (Path(cache) / "conditions.json").exists():
        evaluation = ConditionSplit.from_json(json.loads((Path(cache) / "conditions.json").read_text())).evaluation
    else:
        evaluation = _conditions_for(pipe, None)
    return list(evaluation.conditions), evaluation.source


def bench(
    out: Path, samples: int = 64, steps: int = 50, guidance: float | None = None, batch_size: int = 64,
    repeats: int = 3, seed: int = 20_000, methods: Sequence[str] | None = None, pipeline: str | Path | None = None,
    prompts: str | Path | None = None, cache: str | Path | None = None, call_kwargs: dict | None = None,
    device: str = "cpu", dtype: str | None = None,
) -> list[dict]:
    """Sweep every method over its knob (see `cachepilot.bench`) on a pipeline (default: the embedded digits
    one) and write the report to `out`. cache: a `cachepilot fit` directory whose learned methods join the
    sweep (default for the digits model: the shipped cache)."""
    from cachepilot.bench.methods import all_methods
    from cachepilot.bench.report import markdown_table, write_report
    from cachepilot.bench.runner import BenchConfig, overhead_fraction, run_bench
    from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline
    from cachepilot.loading import load_pipeline as load_any_pipeline

    for name, value in (("samples", samples), ("steps", steps), ("batch size", batch_size), ("repeats", repeats)):
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    if samples < 2:
        raise InvalidInputError("samples must be >= 2 (a Fréchet distance needs a covariance)")
    check_output_dir(out)
    pipe = load_any_pipeline(pipeline, device=device, dtype=dtype)
    digits = isinstance(pipe, DigitsDiTPipeline)
    if digits:
        guidance = DEFAULT_GUIDANCE_SCALE if guidance is None else guidance
        pipe.check_inputs([0], steps, guidance)
    available = all_methods(steps, cache if cache is not None else ("default" if digits else None))
    if methods:
        unknown = sorted(set(methods) - {m.name for m in available})
        if unknown:
            raise InvalidInputError(f"unknown bench method(s) {unknown}; available: {[m.name for m in available]}")
        available = [m for m in available if m.name in methods]
    conditions, source = bench_conditions(pipe, prompts, cache)
    config = BenchConfig(samples=samples, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size,
                         repeats=repeats, call_kwargs=dict(call_kwargs or default_call_kwargs(pipe)))
    partial = Path(out) / "results.partial.json"  # the rows so far: an interrupted sweep keeps what it measured

    def keep(rows_so_far: list[dict]) -> None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.with_suffix(".tmp").write_text(json.dumps(rows_so_far, indent=2))
        partial.with_suffix(".tmp").replace(partial)

    rows = run_bench(pipe, available, config, conditions=conditions, quality=embedded_quality(pipe), on_row=keep)
    partial.unlink(missing_ok=True)
    meta = {"pipeline": type(pipe).__name__, "conditions": source, "samples": samples, "steps": steps,
            "guidance": guidance, "batch": batch_size, "repeats": repeats, "threads": torch.get_num_threads()}
    write_report(rows, out, meta)
    console.print(markdown_table(rows))
    overhead = overhead_fraction(rows)
    if overhead:
        worst = max(overhead, key=overhead.get)
        console.print(f"policy + predictor time per step / one stack evaluation: max {overhead[worst]:.3%} ({worst})")
    console.print(f"wrote {out}/results.json, results.md, pareto.png")
    return rows
