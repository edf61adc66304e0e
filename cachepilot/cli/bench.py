"""`cachepilot bench`: Pareto benchmark of every cache method vs. full compute, on any supported pipeline."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from cachepilot import seeds
from cachepilot.cli.common import OUT, add_pipeline_alias, add_pipeline_args
from cachepilot.errors import InvalidInputError


def register(sub: argparse._SubParsersAction) -> None:
    bench_p = sub.add_parser("bench", help="Pareto benchmark of every cache method vs. full compute")
    bench_p.add_argument("--out", type=Path, default=OUT / "bench", help="writes results.json/.md, pareto.png")
    bench_p.add_argument("--samples", type=int, default=64, help="images per method and knob (classes balanced)")
    bench_p.add_argument("--steps", type=int, default=50, help="denoising steps")
    bench_p.add_argument("--guidance", type=float, default=None)
    bench_p.add_argument("--batch-size", type=int, default=64)
    bench_p.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    bench_p.add_argument("--seed", type=int, default=seeds.BENCH)
    bench_p.add_argument("--methods", nargs="+", default=None, help="only these method names (default: all)")
    bench_p.add_argument("--cache", type=Path, default=None,
                         help="a cache checkpoint directory (`cachepilot fit` output) whose learned methods join the "
                              "sweep (default for the digits model: the shipped cache)")
    add_pipeline_args(bench_p)
    add_pipeline_alias(bench_p)
    bench_p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    bench(args.out, samples=args.samples, steps=args.steps, guidance=args.guidance, batch_size=args.batch_size,
          repeats=args.repeats, seed=args.seed, methods=args.methods, pipeline=args.pipeline, prompts=args.prompts,
          cache=args.cache, call_kwargs=args.call_kwargs, device=args.device, dtype=args.dtype)


def bench(
    out: Path, samples: int = 64, steps: int = 50, guidance: float | None = None, batch_size: int = 64,
    repeats: int = 3, seed: int = seeds.BENCH, methods: Sequence[str] | None = None, pipeline: str | Path | None = None,
    prompts: str | Path | None = None, cache: str | Path | None = None, call_kwargs: dict | None = None,
    device: str = "cpu", dtype: str | None = None,
) -> list[dict]:
    """Sweep every method over its knob (see `cachepilot.bench`) on a pipeline (default: the embedded digits
    one) and write the report to `out`. cache: a `cachepilot fit` directory whose learned methods join the
    sweep (default for the digits model: the shipped cache)."""
    import torch
    from rich.console import Console

    from cachepilot.bench.methods import all_methods, missing_peers
    from cachepilot.bench.report import markdown_table, missing_lines, versus_no_fit, versus_table, write_report
    from cachepilot.bench.runner import BenchConfig, evaluation_conditions, overhead_fraction, run_bench
    from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE, DigitsDiTPipeline
    from cachepilot.embedded.base import call_kwargs_for, quality_for
    from cachepilot.loading import load_pipeline as load_any_pipeline
    from cachepilot.outputs import check_output_dir

    for name, value in (("samples", samples), ("steps", steps), ("batch size", batch_size), ("repeats", repeats)):
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    if samples < 2:
        raise InvalidInputError("samples must be >= 2 (a Fréchet distance needs a covariance)")
    check_output_dir(out)
    console = Console()
    missing = missing_peers()
    if missing:  # said first: a sweep without its strongest peer must not read as complete
        console.print(missing_lines(missing).strip(), markup=False)
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
    conditions, source = evaluation_conditions(pipe, prompts, cache)
    config = BenchConfig(samples=samples, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size,
                         repeats=repeats, call_kwargs=dict(call_kwargs or call_kwargs_for(pipe)))
    partial = Path(out) / "results.partial.json"  # the rows so far: an interrupted sweep keeps what it measured

    def keep(rows_so_far: list[dict]) -> None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.with_suffix(".tmp").write_text(json.dumps(rows_so_far, indent=2))
        partial.with_suffix(".tmp").replace(partial)

    rows = run_bench(pipe, available, config, conditions=conditions, quality=quality_for(pipe), on_row=keep)
    partial.unlink(missing_ok=True)
    meta = {"pipeline": type(pipe).__name__, "conditions": source, "samples": samples, "steps": steps,
            "guidance": guidance, "batch": batch_size, "repeats": repeats, "threads": torch.get_num_threads()}
    fitted = {m.name for m in available if m.needs_fit}
    write_report(rows, out, meta, fitted=fitted, missing=missing)
    console.print(markdown_table(rows))
    if fitted & {r["method"] for r in rows}:
        console.print(versus_table(versus_no_fit(rows, fitted)))
    overhead = overhead_fraction(rows)
    if overhead:
        worst = max(overhead, key=overhead.get)
        console.print(f"policy + predictor time per step / one stack evaluation: max {overhead[worst]:.3%} ({worst})")
    console.print(f"wrote {out}/results.json, results.md, pareto.png")
    return rows
