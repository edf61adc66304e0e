"""The combination forecaster against the training-free ones on the same uniform schedules, closed loop.

Per step count: fit the combination (`cachepilot.train.combination.fit_on_pipeline`) on full-compute samples of
training conditions at the calibration seeds, timing the fit and counting its stack evaluations; then run the
bench (`cachepilot.bench.runner.run_bench`, PSNR vs full compute on the bench's held-out conditions and seeds)
for every `uniform+<forecaster>` method and `uniform+combo` on the uniform schedules at compute fractions 0.2 to
0.5, and print the table (`cachepilot.bench.forecasters.uniform_table`).

    OMP_NUM_THREADS=1 python -m experiments.combination --steps 20 50 --samples 16 --fit-samples 16 --out OUT
    OMP_NUM_THREADS=1 python -m experiments.combination --pipeline checkpoints/scenes-flux \\
        --fit-prompts bench/prompts/scenes_train.txt --steps 20 50 --samples 16 --fit-samples 16 --out OUT

Training conditions: the train split of --fit-prompts, else every class of a class-conditional pipeline (the seeds
are disjoint from the bench's). Evaluation: the bench's conditions (the scenes pipeline's held-out prompts, each
with a colour/shape pair never in training; the digits classes) at the bench's seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=None, help="default: the embedded digits model")
    parser.add_argument("--fit-prompts", default=None, help="training conditions (its train split)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--samples", type=int, default=16, help="bench samples (held-out seeds)")
    parser.add_argument("--fit-samples", type=int, default=16, help="full-compute training samples per step count")
    parser.add_argument("--bases", nargs="+", default=None)
    parser.add_argument("--ridge", type=float, default=None)
    parser.add_argument("--methods", nargs="+", default=None, help="uniform+ baselines (default: all)")
    parser.add_argument("--trajectory", choices=("full", "cached"), default="full",
                        help="fit on full-compute trajectories, or go on along each schedule's cached one")
    parser.add_argument("--rounds", type=int, default=1, help="cached-trajectory rounds")
    parser.add_argument("--objective", choices=("step", "final"), default="step",
                        help="each step's residual error, or the final sample's (linearised through the scheduler)")
    parser.add_argument("--beta", type=float, default=1.0, help="final objective: weight of the per-step errors")
    parser.add_argument("--free", action="store_true", help="weights unconstrained (default: each step's sum to 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from cachepilot.bench.forecasters import combination_method, uniform_methods, uniform_table
    from cachepilot.bench.runner import BenchConfig, evaluation_conditions, run_bench
    from cachepilot.cli.common import conditions_of
    from cachepilot.conditions import split_conditions
    from cachepilot.embedded.base import call_kwargs_for
    from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE, DigitsDiTPipeline
    from cachepilot.loading import load_pipeline
    from cachepilot.predictors.combination import DEFAULT_BASES
    from cachepilot.train.combination import DEFAULT_RIDGE, fit_on_pipeline

    args.out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    guidance = DEFAULT_GUIDANCE_SCALE if isinstance(pipe, DigitsDiTPipeline) else None  # as `cachepilot bench`
    kwargs = dict(call_kwargs_for(pipe))
    fit_kwargs = {**kwargs, **({"guidance_scale": guidance} if guidance is not None else {})}
    fit_conditions = list(split_conditions(conditions_of(pipe, args.fit_prompts)).train.conditions)
    conditions, source = evaluation_conditions(pipe)
    fractions = (0.2, 0.3, 0.4, 0.5)
    schedules = [f"uniform:{f:g}" for f in fractions]
    result = {"pipeline": type(pipe).__name__, "conditions": source, "threads": torch.get_num_threads(),
              "samples": args.samples, "fit_samples": args.fit_samples, "counts": {}}
    for steps in args.steps:
        tic = time.perf_counter()
        combination, record = fit_on_pipeline(pipe, [steps], schedules, fit_conditions, args.fit_samples,
                                              call_kwargs=fit_kwargs, bases=args.bases or DEFAULT_BASES,
                                              ridge=DEFAULT_RIDGE if args.ridge is None else args.ridge,
                                              batch_size=args.batch_size, trajectory=args.trajectory,
                                              rounds=args.rounds, objective=args.objective, beta=args.beta,
                                              affine=not args.free)
        record["wall_seconds"] = time.perf_counter() - tic
        combination.save_pretrained(args.out / f"combination-{steps}", {"record": record})
        methods = [m for m in uniform_methods(steps) if args.methods is None or m.name in args.methods]
        config = BenchConfig(samples=args.samples, steps=steps, guidance=guidance, batch_size=args.batch_size,
                             repeats=1, call_kwargs=kwargs)
        rows = run_bench(pipe, methods + [combination_method(steps, combination)], config, conditions=conditions,
                         progress=False)
        result["counts"][steps] = {"fit": record, "rows": rows}
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        print(f"{steps} steps: fit {record['wall_seconds']:.1f} s wall ({record['record_seconds']:.1f} s recording "
              f"{record['stack_evaluations']} stack evaluations, {record['solve_seconds']:.2f} s solving)")
        print(uniform_table(rows))
    return result


if __name__ == "__main__":
    main()
