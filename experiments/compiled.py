"""Cached sampling with the blocks compiled by inductor vs. eager, on the embedded digits pipeline.

    python -m experiments.compiled [--samples 20 --steps 20 --repeats 5 --policy fixed:2 --predictor taylor:2]

The transformer's blocks are compiled regionally with `fullgraph=True` after `enable` (cachepilot runs the
computing rows through the compiled blocks; its decisions stay eager). Same seeds, one process: the largest
pixel difference between the two outputs (rounding: inductor fuses and reorders float ops) and the median
wall time of each, timed alternately after a compiling warm-up call. Needs a C++ compiler (inductor on CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cachepilot
from cachepilot.compile import compile_blocks
from cachepilot.driver import unhooked_twin
from cachepilot.embedded.digits.loading import load_pipeline
from cachepilot.embedded.digits.sampling import sample_images


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--policy", default="fixed:2")
    parser.add_argument("--predictor", default="taylor:2")
    args = parser.parse_args(argv)
    labels = [i % 10 for i in range(args.samples)]
    base = load_pipeline()
    eager, compiled = unhooked_twin(base), unhooked_twin(base)
    for pipe in (eager, compiled):
        cachepilot.enable(pipe, args.policy, args.predictor)
    compile_blocks(compiled.transformer)

    def sample(pipe) -> tuple[torch.Tensor, float]:
        tic = time.perf_counter()
        images = sample_images(pipe, labels, seed=0, num_inference_steps=args.steps)
        return images, time.perf_counter() - tic

    tic = time.perf_counter()
    reference, _ = sample(eager)
    images, _ = sample(compiled)  # compiles
    warm_up = time.perf_counter() - tic
    walls: dict[str, list[float]] = {"eager": [], "inductor": []}
    for _ in range(args.repeats):
        walls["eager"].append(sample(eager)[1])
        walls["inductor"].append(sample(compiled)[1])
    result = {"max_abs_pixel_diff": (images - reference).abs().max().item(), "warm_up_s": warm_up,
              "compute_fraction": cachepilot.last_stats(compiled).compute_fraction,
              **{f"median_{k}_s": statistics.median(v) for k, v in walls.items()}}
    print(f"{args.policy} + {args.predictor}, {args.samples} images x {args.steps} steps: max |eager - inductor| "
          f"{result['max_abs_pixel_diff']:.2e} (pixels in [0, 1]); median wall eager {result['median_eager_s']:.3f} s, "
          f"inductor {result['median_inductor_s']:.3f} s (x{result['median_eager_s'] / result['median_inductor_s']:.2f}); "
          f"compile warm-up {warm_up:.0f} s; compute fraction {result['compute_fraction']:.2f}; "
          f"torch threads {torch.get_num_threads()}")
    return result


if __name__ == "__main__":
    main()
