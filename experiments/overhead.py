"""What the hooks cost at full compute: the pipeline unhooked vs. cached with policies that compute every step.

    python -m experiments.overhead [--samples 64 --steps 50 --repeats 7]

On the embedded digits pipeline, in one process, same seeds: the unhooked pipeline and the same pipeline hooked
with `always` (no observation), `threshold:0` (observes the probe every step, computes every step) and the
learned policy at compute 1.0 are timed in turn, round after round (the order rotating), and each is quoted as the ratio of its
median wall time to the unhooked median. The outputs are checked equal to the unhooked ones (full compute is
bit-exact), so the ratio is the hooks' cost alone. A second unhooked copy ("unhooked-2") is timed the same
way: its ratio is the measurement's own bias and noise on this machine. Wall and process CPU time are both quoted: on a shared
machine the CPU time (one torch thread) is the steadier of the two, and its median of per-round ratios (each side over the
unhooked run of the same round) the steadiest: load that drifts over minutes hits both sides of a pair alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import cachepilot
from cachepilot.driver import unhooked_twin
from cachepilot.embedded.digits.loading import load_pipeline
from cachepilot.embedded.digits.sampling import sample_images

POLICIES = ("always", "threshold:0")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    base = load_pipeline()
    labels = [i % 10 for i in range(args.samples)]
    pipes = {"unhooked": unhooked_twin(base), "unhooked-2": unhooked_twin(base)}  # A/A control: the noise floor
    for spec in POLICIES:
        pipes[spec] = unhooked_twin(base)
        cachepilot.enable(pipes[spec], spec)
    pipes["learned@1.0"] = unhooked_twin(base)
    cachepilot.enable(pipes["learned@1.0"], speed=1.0)

    walls: dict[str, list[float]] = {name: [] for name in pipes}
    cpus: dict[str, list[float]] = {name: [] for name in pipes}  # process CPU time: less hit by other load
    reference = sample_images(pipes["unhooked"], labels, seed=0, num_inference_steps=args.steps)  # warm-up
    for name, pipe in pipes.items():  # warm-up, and full compute is bit-exact whatever the hooks
        if name != "unhooked":
            same = torch.equal(sample_images(pipe, labels, seed=0, num_inference_steps=args.steps), reference)
            if not same and name != "learned@1.0":
                raise AssertionError(f"{name}: full compute is not bit-exact")
    names = list(pipes)
    for round_ in range(args.repeats):  # the order rotates each round: no one always runs after the same one
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            pipe = pipes[name]
            tic, cpu_tic = time.perf_counter(), time.process_time()
            sample_images(pipe, labels, seed=0, num_inference_steps=args.steps)
            walls[name].append(time.perf_counter() - tic)
            cpus[name].append(time.process_time() - cpu_tic)
    base_wall, base_cpu = statistics.median(walls["unhooked"]), statistics.median(cpus["unhooked"])
    # Paired: each round's time over the same round's unhooked time, then the median over rounds. Load that
    # drifts over minutes hits both sides of a pair alike, so this is the steadier figure on a shared machine.
    paired = {name: statistics.median(c / b - 1 for c, b in zip(cpus[name], cpus["unhooked"]))
              for name in pipes if name != "unhooked"}
    result = {"samples": args.samples, "steps": args.steps, "repeats": args.repeats,
              "threads": torch.get_num_threads(),
              "median_s": {name: statistics.median(w) for name, w in walls.items()}, "walls_s": walls,
              "overhead": {name: statistics.median(w) / base_wall - 1 for name, w in walls.items() if name != "unhooked"},
              "cpu_s": cpus, "cpu_overhead": {name: statistics.median(c) / base_cpu - 1 for name, c in cpus.items()
                                              if name != "unhooked"},
              "cpu_overhead_paired": paired,
              "compute_fraction_learned": cachepilot.last_stats(pipes["learned@1.0"]).compute_fraction}
    for name, over in result["overhead"].items():
        print(f"{name:>12}: {100 * over:+.2f} % wall, {100 * result['cpu_overhead'][name]:+.2f} % CPU time, "
              f"{100 * paired[name]:+.2f} % CPU time paired by round vs unhooked "
              f"(median wall {result['median_s'][name]:.3f} s, unhooked {base_wall:.3f} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
