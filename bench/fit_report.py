"""The bench stage of `cachepilot fit`: the fitted cache against its like-for-like baselines, on the
evaluation conditions (never trained on) and held-out seeds, and the checkpoint's README.

At each target budget: the learned policy, the searched fixed schedule (same forecaster), a uniform
fixed interval with Taylor-2 (training-free) and with the learned head (bare, and gated when calibrated), and
fewer steps at the same compute.
"""

from __future__ import annotations

import json
from pathlib import Path

from cachepilot.seeds import BENCH as BENCH_SEED
from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.bench.methods import fewer_steps, ours_method
from cachepilot.bench.report import markdown_table, write_report
from cachepilot.bench.runner import BenchConfig, run_bench
from cachepilot.conditions import ConditionSet
from cachepilot.embedded.base import quality_for


def bench_checkpoint(pipe, out: Path, evaluation: ConditionSet, config) -> list[dict]:
    out = Path(out)
    cache = CacheCheckpoint(out)
    predictor = cache.predictor_spec()  # the head with its gate, as `enable(checkpoint=...)` loads it
    searched = cache.schedules().masks()
    targets = sorted(config.targets)
    intervals = sorted({max(2, round(1 / t)) for t in targets})
    # a checkpoint shipping its searched schedules: the learned-policy row would run them a second time
    learned = [] if cache.ships_searched else [ours_method("learned-policy", lambda t: cache.policy(t), predictor,
                                                           targets)]
    lean = config.recipe == "lean"
    methods = [
        *([] if lean else [ours_method("always", lambda _: "always", "reuse", [None])]),
        *learned,
        # a lean fit's forecaster per target
        ours_method("searched-schedule", lambda t: "schedule:" + searched[t], cache.predictor_spec, sorted(searched)),
        ours_method("fixed+taylor2", lambda n: f"fixed:{n}", "taylor:2", intervals),
        *([ours_method("fixed+learned", lambda n: f"fixed:{n}", f"learned:{cache.predictor_dir}", intervals)]
          if cache.predictor_dir is not None else []),  # the bare head (a lean fit has none)
        fewer_steps(),
    ]
    if predictor.startswith("gated:"):
        methods.insert(-1, ours_method("fixed+gated", lambda n: f"fixed:{n}", predictor, intervals))
    methods[-1].knobs = targets
    bench = BenchConfig(samples=config.bench_samples, steps=config.steps, guidance=None,
                        seed=BENCH_SEED, batch_size=config.batch_size, repeats=config.bench_repeats,
                        call_kwargs=config.call_kwargs, paired=not lean)
    rows = run_bench(pipe, methods, bench, conditions=list(evaluation.conditions),
                     quality=quality_for(pipe))  # the embedded models' judges; None for users' pipelines
    meta = {"samples": bench.samples, "steps": bench.steps, "conditions": evaluation.source,
            "evaluation_conditions": len(evaluation), "repeats": bench.repeats}
    write_report(rows, out / "bench", meta)
    return rows


def write_readme(pipe, out: Path) -> None:
    """The checkpoint's README: model, conditions, budgets, stage wall times and the bench figures."""
    record = CacheCheckpoint(out).config()
    rows = json.loads((out / "bench" / "results.json").read_text())
    bench = rows[0]
    (out / "README.md").write_text(_readme(pipe, out, record, rows, bench))


def cost_table(record: dict) -> str:
    """What each stage spent (transformer evaluations: block-stack evaluations of one sample, guidance copies
    included; wall seconds) beside what the plan said before it ran (`<=`: an upper bound)."""
    planned = (record.get("plan") or {}).get("stages", {})
    lines = ["## Cost per stage", "",
             "Transformer evaluations: block-stack evaluations of one sample (guidance copies count as samples, a "
             "partial stack by its blocks), counted while the stage ran; the plan is what `fit` said before any stage.",
             "", "| stage | evaluations | wall s | planned evaluations |", "|---|---:|---:|---:|"]
    cost = record.get("cost", {})
    for stage, spent in cost.items():
        plan = planned.get(stage)
        said = f"{'<=' if plan['bound'] else ''}{plan['evaluations']:,.0f}" if plan else "-"
        lines.append(f"| {stage} | {spent['evaluations']:,.0f} | {spent['seconds']:.1f} | {said} |")
    lines.append(f"| total | {sum(c['evaluations'] for c in cost.values()):,.0f} | "
                 f"{sum(c['seconds'] for c in cost.values()):.1f} | |")
    return "\n".join(lines)


def shipped_policy_line(out: Path) -> str:
    """The README's line on what `enable(checkpoint=...)` runs, when the fit shipped the searched schedules."""
    selection = CacheCheckpoint(out).selection()
    if selection.get("kind") != "searched":
        return ""
    if "gain_db" not in selection:  # no policy trained
        return (f"This checkpoint ships the searched schedules ({selection['reason']}; forecaster "
                f"{CacheCheckpoint(out).predictor_spec()}): `enable` and the bench's searched-schedule rows run "
                "them.\n\n")
    return (f"The learned policy did not beat the searched schedule on validation ({selection['gain_db']:+.2f} dB, "
            f"margin {selection['margin_db']:g} dB): this checkpoint ships the searched schedule (`enable` and the "
            "bench's searched-schedule rows run it).\n\n")


def _readme(pipe, out: Path, record: dict, rows: list[dict], bench: dict) -> str:
    smoke = ("# SMOKE FIT (`cachepilot fit --smoke`: every stage at toy sizes to check the plumbing; not a usable "
             "cache, its figures mean nothing)\n\n" if record.get("fit", {}).get("smoke") else "")
    timing = ("alternating with full compute" if bench.get("paired", True) else
              "against one full-compute run timed first (lean recipe)")
    return smoke + f"""# cachepilot cache for a {type(pipe).__name__} ({record['backbone']['backbone_class']})

Fitted by `cachepilot fit` ({record['num_steps']} steps, call kwargs {json.dumps(record['call_kwargs'])}).
Conditions: {record['conditions']['train']} train / {record['conditions']['validation']} validation /
{record['conditions']['evaluation']} evaluation, split by {record['split_by']} (`conditions.json`).
Stage wall times (s): {json.dumps(record['stage_seconds'])}.

{cost_table(record)}

{shipped_policy_line(out)}Use it:

```python
import cachepilot
cachepilot.enable(pipe, checkpoint="{out}", speed=0.3)   # target compute fraction
```

## Bench on the evaluation conditions (never trained on), held-out seeds

{bench['samples']} samples, {bench['steps']} steps, batch {bench['batch_size']}; PSNR / SSIM vs. full compute of
the same seed and condition; speed-up measured in the same process, {timing}.

{markdown_table(rows)}
"""
