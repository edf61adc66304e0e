"""Speed-up beside compute where the block stack dominates: the embedded text-to-image pipeline with its
transformer swapped (`FluxPipeline.from_pipe`) for a random-weight FluxTransformer2DModel of ~100 M parameters
at 1024 image tokens, on CPU.

    OMP_NUM_THREADS=1 python -m experiments.speed_at_size [--steps 20 --rounds 3 --dim 768 --json out.json]

The embedded model's own stack is a few MB, so its wall speed-ups are bounded by the text encoder, the VAE and
Python around the stack; at this size they are not. Each method (fixed intervals with Taylor-2, a DBCache-style
structure that always computes the first and last blocks, the TaylorSeer schedule) is timed beside full compute
in every round, the order rotating; the figures are the medians over rounds of full compute's process CPU time
(all threads of this process: steadier than wall time on a shared machine) over the method's, with wall time
beside it, and the compute fraction in block evaluations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import cachepilot
from cachepilot.bench.counting import BlockCounter
from cachepilot.driver import SamplingDriver
from cachepilot.loading import load_pipeline
from cachepilot.policies.baselines import taylorseer_mask
from cachepilot.runtime.adapters import get_adapter

# (label, policy, predictor, structure): structure None is the whole stack
METHODS = [("fixed:2 + taylor:2", "fixed:2", "taylor:2", None), ("fixed:3 + taylor:2", "fixed:3", "taylor:2", None),
           ("fixed:4 + taylor:2", "fixed:4", "taylor:2", None), ("fixed:5 + taylor:2", "fixed:5", "taylor:2", None),
           ("ts-schedule:4 + taylor:2", "ts:4", "taylor:2", None),
           ("F1B1 fixed:3 + taylor:2", "fixed:3", "taylor:2", "F1B1")]


def big_transformer(dim: int, double: int, single: int):
    """A random FluxTransformer2DModel shaped for the scenes pipeline's encoders and VAE (16 latent channels,
    64-wide text embeddings), `dim` = heads x 64; weights perturbed so no block is a near-identity."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=double, num_single_layers=single,
                                   attention_head_dim=64, num_attention_heads=dim // 64, joint_attention_dim=64,
                                   pooled_projection_dim=64, axes_dims_rope=(16, 24, 24)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--double", type=int, default=2)
    parser.add_argument("--single", type=int, default=6)
    parser.add_argument("--size", type=int, default=256, help="height = width (256: 1024 image tokens)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from diffusers import FluxPipeline

    scenes = load_pipeline("checkpoints/scenes-flux")
    transformer = big_transformer(args.dim, args.double, args.single)
    pipe = FluxPipeline.from_pipe(scenes, transformer=transformer)
    params = sum(p.numel() for p in transformer.parameters())
    call = {"height": args.size, "width": args.size, "max_sequence_length": 16, "guidance_scale": 1.0}
    driver = SamplingDriver(pipe, args.steps, call, batch_size=1)
    blocks = get_adapter(transformer).blocks(transformer)
    condition = [{"prompt": "a red circle above a blue square"}]

    def run(method) -> dict:
        if method is not None:
            _, policy, predictor, structure = method
            if policy.startswith("ts:"):
                policy = "schedule:" + taylorseer_mask(int(policy[3:]), args.steps)
            cachepilot.enable(pipe, policy, predictor, structure=structure)
        try:
            with BlockCounter(blocks) as counter:
                wall, cpu = time.perf_counter(), time.process_time()
                images = driver.sample(condition, [0]).images
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            if method is not None:
                cachepilot.disable(pipe)
        return {"wall": wall, "cpu": cpu, "rows": counter.rows, "images": images}

    run(None)  # warm-up
    measured = {m[0]: [] for m in METHODS}
    for round_index in range(args.rounds):
        order = METHODS[round_index % len(METHODS):] + METHODS[:round_index % len(METHODS)]
        for method in order:  # full compute beside each method, the order rotating
            full, cached = run(None), run(method)
            measured[method[0]].append((full, cached))
            print(f"round {round_index}: {method[0]}: cpu {full['cpu']:.1f} / {cached['cpu']:.1f} s", flush=True)
    table = []
    for label, pairs in measured.items():
        table.append({"method": label, "compute_fraction": pairs[0][1]["rows"] / pairs[0][0]["rows"],
                      "cpu_speedup": statistics.median(f["cpu"] / c["cpu"] for f, c in pairs),
                      "wall_speedup": statistics.median(f["wall"] / c["wall"] for f, c in pairs),
                      "full_cpu_s": statistics.median(f["cpu"] for f, _ in pairs)})
    print(f"FluxTransformer2DModel {params / 1e6:.1f} M parameters, {(args.size // (2 * pipe.vae_scale_factor)) ** 2} image tokens, "
          f"{args.steps} steps, {torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print("| method | compute (block evaluations) | 1 / compute | speed-up (CPU time) | speed-up (wall) |")
    print("|---|---|---|---|---|")
    for r in table:
        print(f"| {r['method']} | {r['compute_fraction']:.3f} | {1 / r['compute_fraction']:.2f} | "
              f"{r['cpu_speedup']:.2f} | {r['wall_speedup']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": params, "args": vars(args), "rows": table}, f, indent=2)


if __name__ == "__main__":
    main()
