"""Host syncs per denoising step on CUDA: the same call unhooked and cached, counted by torch's sync debug mode.

    python -m experiments.syncs [--pipeline checkpoints/scenes-flux --cache checkpoints/scenes-flux-cache
                                      --policy learned:0.4 --steps 20 --samples 16]

The per-step cache path may add at most one host sync per step (the engine's one `.tolist()` of the step's
decisions). `torch.cuda.set_sync_debug_mode("warn")` warns at every synchronising CUDA call; this counts those
warnings during one unhooked call and one cached call of the same batch (same seeds) and prints the extra syncs
per step, the devices of the output, the largest pixel difference and the PSNR (of the batch's mean squared
error, and the mean of each image's, as `cachepilot bench` quotes it). Without CUDA (`--device cpu`) it
compares the outputs only.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter

import torch

import cachepilot
from cachepilot.driver import unhooked_twin
from cachepilot.embedded.base import call_kwargs_for, conditions_for
from cachepilot.loading import load_pipeline


def _call(pipe, labels_or_prompts: list, steps: int, call_kwargs: dict) -> torch.Tensor:
    from cachepilot.embedded.digits.sampling import sample_images

    if isinstance(labels_or_prompts[0], int):
        return sample_images(pipe, labels_or_prompts, seed=0, num_inference_steps=steps)
    gen = torch.Generator(pipe.transformer.device).manual_seed(0)
    return pipe(labels_or_prompts, num_inference_steps=steps, generator=gen, output_type="pt",
                **call_kwargs).images


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def count_syncs(fn) -> tuple[object, int, Counter]:
    """`fn()`'s result, the number of synchronising CUDA calls it made, and where (the innermost frame of ours
    or diffusers' that made each)."""
    import traceback

    where: Counter = Counter()
    if not torch.cuda.is_available():  # nothing to count: the comparison of outputs still runs
        return fn(), 0, where
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
            torch.cuda.set_sync_debug_mode(0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    for w in syncs:
        where[f"{w.filename.split('site-packages/')[-1]}:{w.lineno}"] += 1
    return out, len(syncs), where


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=None, help="default: the embedded digits pipeline")
    parser.add_argument("--cache", default=None, help="a `cachepilot fit` directory (learned policies)")
    parser.add_argument("--policy", default="learned:0.3")
    parser.add_argument("--predictor", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    base = load_pipeline(args.pipeline, device=args.device)
    conditions = conditions_for(base, args.samples)
    inputs = [c["prompt"] for c in conditions] if conditions else [i % 10 for i in range(args.samples)]
    call_kwargs = call_kwargs_for(base)
    full, cached = unhooked_twin(base), unhooked_twin(base)
    if args.policy.startswith("learned"):
        speed = float(args.policy.split(":")[1]) if ":" in args.policy else 0.3
        cachepilot.enable(cached, checkpoint=args.cache, speed=speed, predictor=args.predictor)
    else:
        cachepilot.enable(cached, args.policy, predictor=args.predictor)
    _call(full, inputs, args.steps, call_kwargs), _call(cached, inputs, args.steps, call_kwargs)  # warm-up
    ref, n_full, where_full = count_syncs(lambda: _call(full, inputs, args.steps, call_kwargs))
    out, n_cached, where_cached = count_syncs(lambda: _call(cached, inputs, args.steps, call_kwargs))
    stats = cachepilot.last_stats(cached)
    calls = max(len(getattr(stats, "contexts", {}) or {}), 1)
    walls = {"full": [], "cached": []}
    for _ in range(5):  # alternately, synchronised
        for name, pipe in (("full", full), ("cached", cached)):
            _synchronize()
            tic = time.perf_counter()
            _call(pipe, inputs, args.steps, call_kwargs)
            _synchronize()
            walls[name].append(time.perf_counter() - tic)
    mse = torch.mean((out.float() - ref.float()) ** 2).item()
    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "pipeline": args.pipeline or "digits", "policy": args.policy,
        "steps": args.steps, "samples": args.samples, "transformer_calls_per_step": calls,
        "syncs_full": n_full, "syncs_cached": n_cached,
        "extra_syncs_per_step": (n_cached - n_full) / args.steps,
        "where_extra": {k: v - where_full.get(k, 0) for k, v in where_cached.items() if v != where_full.get(k, 0)},
        "output_device": str(out.device), "compute_fraction": stats.compute_fraction if stats else None,
        "max_abs_diff": (out.float() - ref.float()).abs().max().item(),
        "psnr_db_of_batch_mse": 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item(),
        "psnr_db_mean_per_image": (10 * torch.log10(1.0 / ((out.float() - ref.float()) ** 2).flatten(1).mean(1)
                                                    .clamp_min(1e-12))).mean().item(),  # as the bench's
        "median_wall_s": {k: sorted(v)[len(v) // 2] for k, v in walls.items()},
    }
    result["speedup"] = result["median_wall_s"]["full"] / result["median_wall_s"]["cached"]
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
