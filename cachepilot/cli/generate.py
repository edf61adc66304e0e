"""`cachepilot generate`: sample one image per condition on any supported pipeline and write a grid."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cachepilot.cli.common import OUT, add_pipeline_alias, json_object, takes_class_labels
from cachepilot.errors import CachepilotError, InvalidInputError
from cachepilot.seeds import GENERATE

DEFAULT_TARGET = 0.3  # the learned policy's target when only --cache (or --policy learned) is given


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """What generate and evaluate share: the pipeline, denoising steps, guidance, seeds, batch and device."""
    p.add_argument("--pipeline", default=None, help="diffusers pipeline directory or hub id (default: the embedded "
                                                    "digits model)")
    add_pipeline_alias(p)
    p.add_argument("--steps", type=int, default=50, help="denoising steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=GENERATE, help="image i uses seed + i")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="sample images (digits by default) and write a PNG grid")
    gen.add_argument("--classes", type=int, nargs="+", default=None,
                     help="one image per class id (class-conditional pipelines; default 0-9 for the digits model)")
    gen.add_argument("--cache", default=None,
                     help="a cache checkpoint directory (`cachepilot fit` output, or hub id): its learned policy and "
                          f"forecaster run (alone: --policy learned:{DEFAULT_TARGET})")
    gen.add_argument("--prompts", default=None, help="one image per condition of this file (text pipelines)")
    gen.add_argument("--call-kwargs", type=json_object, default={}, help="JSON kwargs of every pipeline call")
    gen.add_argument("--dtype", default=None)
    gen.add_argument("--out", type=Path, default=OUT / "grid.png", help="image file to write (.png, .jpg, ...)")
    gen.add_argument("--policy", default=None,
                     help="cache policy: always | fixed:N | threshold:DELTA | schedule:MASK | learned[:TARGET] "
                          f"(target compute fraction, default {DEFAULT_TARGET}; --cache's policy, else the shipped "
                          "digits one) (default: no cache, or learned with --cache)")
    gen.add_argument("--predictor", default=None,
                     help="what skipped steps use: reuse (default; the cache's forecaster with a learned policy) | "
                          "taylor:1 | taylor:2 | taylor:1.5 (their mean) | learned[:PATH] | gated:PATH | foca | "
                          "hermite:ORDER | freq:CUTOFF | chebyshev:DEGREE | dmd:RANK | hyca:PATH (docs/forecasters.md)")
    gen.add_argument("--structure", default=None,
                     help="F<n>B<m>: compute the first n and last m blocks at every step and cache the rest "
                          "(DBCache style; default: the whole stack); G<a>,<b>: cache groups of a and b blocks, each "
                          "with its own forecaster (--predictor 'dmd:1|reuse') and, given one per group, its own "
                          "policy (--policy 'fixed:2|fixed:4'; docs/structures.md)")
    gen.add_argument("--speed", type=float, default=None,
                     help="target compute fraction of the learned policy (--policy learned --speed 0.3)")
    add_sampling_args(gen)
    gen.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    policy, predictor = args.policy, args.predictor
    if policy is None and args.speed is None and args.cache is not None:
        print(f"cachepilot: --cache without --policy: running its policy at target {DEFAULT_TARGET} (the learned "
              "one, or the searched schedules it ships; --policy learned:TARGET to choose)", file=sys.stderr)
        policy = "learned"
    if args.speed is not None or policy == "learned":
        if policy not in (None, "learned"):
            raise CachepilotError("--speed sets the learned policy's target: use it with --policy learned")
        policy = f"learned:{DEFAULT_TARGET if args.speed is None else args.speed}"
    if policy is not None and policy.partition(":")[0] == "learned":
        _check_target(policy.partition(":")[2], "--speed" if args.speed is not None else f"--policy {policy}")
    if args.prompts is not None:
        if args.classes is not None:
            raise CachepilotError("give --prompts or --classes, not both")
        from cachepilot.conditions import load_conditions

        conditions = list(load_conditions(args.prompts).conditions)
    else:
        conditions = [{"class_labels": c} for c in (args.classes if args.classes is not None else range(10))]
    kwargs = dict(args.call_kwargs)
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    generate(conditions, args.out, pipeline=args.pipeline, steps=args.steps, call_kwargs=kwargs,
             seed=args.seed, batch_size=args.batch_size, device=args.device, dtype=args.dtype, policy=policy,
             predictor=predictor, cache=args.cache, structure=args.structure)


def _check_target(text: str, flag: str) -> None:
    """A learned policy's target compute fraction, refused with the value as given (the prior reads targets at
    6 decimals, so 1e-9 would otherwise be reported as 0.0)."""
    if not text:
        return
    try:
        target = float(text)
    except ValueError:
        raise CachepilotError(f"{flag}: the target must be a number, got {text!r}") from None
    if not 1e-6 <= target <= 1:
        raise CachepilotError(f"{flag}: the target compute fraction must be in (0, 1] (at least 1e-06), got {text}")


def check_image_path(out: str | Path) -> Path:
    """An image file name PIL can write (by its extension), in a writable directory: checked before sampling."""
    from PIL import Image

    from cachepilot.outputs import check_output_file

    out = Path(out)
    if out.suffix.lower() not in Image.registered_extensions():
        raise InvalidInputError(f"--out {out}: {'no' if not out.suffix else 'unknown'} image extension "
                                f"{out.suffix!r}: give a file name ending in .png, .jpg, .webp, ...")
    return check_output_file(out)


def save_image(image, out: Path) -> None:
    try:
        image.save(out)
    except OSError as err:
        raise InvalidInputError(f"cannot write {out}: {err.strerror or err}") from None


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be >= 1, got {batch_size}")


def generate(
    conditions: Sequence[dict], out: Path, pipeline: str | Path | None = None, steps: int = 50,
    call_kwargs: dict | None = None, seed: int = GENERATE, batch_size: int = 256, device: str = "cpu",
    dtype: str | None = None, policy: str | None = None, predictor: str | None = None, cache: str | Path | None = None,
    structure: str | None = None,
) -> dict:
    """Sample one image per condition (seed + i for image i) on any supported pipeline and write the grid;
    print and return wall times.

    With a cache `policy`, the same seeds are also run with full compute so the speed-up and the fidelity
    (PSNR vs. full compute) are printed side by side. policy "learned:TARGET" uses the shipped policy, or the
    `cache` directory's (a `cachepilot fit` output) with its learned forecaster.
    """
    import torch
    from rich.console import Console

    import cachepilot
    from cachepilot.driver import SamplingDriver
    from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE, DigitsDiTPipeline
    from cachepilot.embedded.digits.sampling import digits_grid as image_grid
    from cachepilot.embedded.base import call_kwargs_for, quality_for
    from cachepilot.finite import check_finite
    from cachepilot.images import image_grid as any_image_grid
    from cachepilot.loading import load_pipeline as load_any_pipeline
    from cachepilot.quality import psnr

    check_batch_size(batch_size)
    if not conditions:
        raise InvalidInputError("nothing to generate: give at least one class or prompt")
    policy_obj, predictor_obj = _cache_policy(policy, predictor, cache)
    if structure is not None:
        from cachepilot.runtime.structure import make_structure

        if policy_obj is None:
            raise InvalidInputError("--structure says which blocks a cache may skip: give it with --policy or --cache")
        structure = make_structure(structure)  # a bad spec: one line before any load
        if structure.num_groups > 1 and policy.startswith("learned") and predictor in (None, "learned"):
            raise InvalidInputError(f"--structure {structure.spec()} forecasts each group on its own, and the cache's "
                                    "forecaster forecasts the whole cached stack: give --predictor per group (e.g. "
                                    "'dmd:1|reuse') or one for every group")
    out = check_image_path(out)
    pipe = load_any_pipeline(pipeline, device=device, dtype=dtype)
    if structure is not None:  # Fn + Bn against the model's blocks, before any sampling
        from cachepilot.runtime.adapters import get_adapter

        blocks = get_adapter(pipe.transformer).blocks(pipe.transformer)
        structure.group_ranges(len(blocks), type(pipe.transformer).__name__)
    labelled = any("class_labels" in c for c in conditions)
    if labelled and not takes_class_labels(pipe):
        raise InvalidInputError(f"{type(pipe).__name__} is conditioned on text: pass --prompts FILE (class ids "
                                "are for class-conditional pipelines)")
    if not labelled and takes_class_labels(pipe) and not any("prompt" in c for c in conditions):
        raise InvalidInputError(f"{type(pipe).__name__} takes class labels: pass --classes")
    kwargs = dict(call_kwargs or call_kwargs_for(pipe))
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
    quality = quality_for(pipe) if not digits and len(conditions) >= 2 else None
    if quality is not None:
        result["full_quality"] = quality(images, list(conditions))
    line = f"full compute: {wall:.3f} s wall ({result['full_ms_per_step']:.2f} ms/step{_quality_text(result, 'full')})"
    if policy_obj is not None:
        reference = images
        cachepilot.enable(pipe, policy_obj, predictor_obj, structure=structure)
        try:
            images, cached_wall = timed()
            stats = cachepilot.last_stats(pipe)
        finally:
            cachepilot.disable(pipe)
        policy_spec, predictor_spec = _spec(policy_obj), _spec(predictor_obj)
        check_finite(images, f"the generated images ({policy_spec} + {predictor_spec})")
        result.update(policy=policy_spec, predictor=predictor_spec, cached_wall_s=cached_wall,
                      speedup=wall / cached_wall, compute_fraction=stats.compute_fraction,
                      psnr=psnr(images, reference))
        if quality is not None:
            result["cached_quality"] = quality(images, list(conditions))
            reference_grid = any_image_grid(reference, scale=max(1, 128 // reference.shape[-1]))
            save_image(reference_grid, out.with_name(out.stem + "_full" + out.suffix))
        line = (f"{policy_spec} + {predictor_spec}: {cached_wall:.3f} s wall, compute fraction "
                f"{stats.compute_fraction:.2f}, speed-up x{result['speedup']:.2f}{_quality_text(result, 'cached')} "
                f"vs. {line}; PSNR vs. full compute {result['psnr']:.2f} dB")
    grid = image_grid(images) if digits else any_image_grid(images, scale=max(1, 128 // images.shape[-1]))
    save_image(grid, out)
    Console().print(f"generated {len(conditions)} images, {steps} steps; {line} -> {out}", soft_wrap=True)
    return result


def _quality_text(result: dict, side: str) -> str:
    """", adherence 0.42" for an embedded pipeline's judge figures (none for users' pipelines)."""
    figures = result.get(f"{side}_quality") or {}
    return "".join(f", {name} {value:.3f}" for name, value in figures.items() if name in ("adherence", "attr_acc"))


def _spec(made: Any) -> str:
    """A policy's or predictor's spec, or each group's joined by '|'."""
    return "|".join(m.spec() for m in made) if isinstance(made, list) else made.spec()


def _cache_policy(policy: str | None, predictor: str | None, cache: str | Path | None):
    """(policy, predictor) objects; a learned policy comes from `cache` (a fit directory), else from the shipped
    digits cache, with that checkpoint's forecaster unless one is named (the rule `enable` follows)."""
    from cachepilot.policies.spec import make_policy
    from cachepilot.predictors.spec import make_predictor
    from cachepilot.runtime.structure import per_group

    if policy is None:
        return None, make_predictor(predictor)
    name, _, arg = policy.partition(":")
    if name == "learned":
        from cachepilot.cache_checkpoint import CacheCheckpoint

        checkpoint = CacheCheckpoint.from_pretrained(cache)
        target = float(arg) if arg else DEFAULT_TARGET
        if predictor is None or predictor == "learned":  # the cache's forecaster, by the one rule `enable` loads it
            predictor = checkpoint.predictor_spec(target)
        return checkpoint.policy(target), make_predictor(predictor)
    return per_group(policy, make_policy), per_group(predictor, make_predictor)
