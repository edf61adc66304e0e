"""The bench stage of `cachepilot fit`: the fitted cache against its like-for-like baselines, on the
evaluation conditions (never trained on) and held-out seeds, and the checkpoint's README.

At each target budget: the learned policy, the searched fixed schedule (same forecaster), a uniform
fixed interval with Taylor-2 (training-free) and with the learned head (bare, and gated when calibrated), and
fewer steps at the same compute.
"""

from __future__ import annotations

import json
from pathlib import Path

from cachepilot.api import head_spec
from cachepilot.bench.methods import fewer_steps, ours_method
from cachepilot.bench.report import markdown_table, write_report
from cachepilot.bench.runner import BenchConfig, run_bench
from cachepilot.conditions import ConditionSet
from cachepilot.policies.learned import LearnedPolicy


def bench_checkpoint(pipe, out: Path, evaluation: ConditionSet, config) -> list[dict]:
    out = Path(out)
    predictor = head_spec(out / "predictors")  # the head with its gate, as `enable(checkpoint=...)` loads it
    searched = {float(k): v["mask"] for k, v in
                json.loads((out / "searched_schedules.json").read_text())["schedules"].items()}
    targets = sorted(config.targets)
    intervals = sorted({max(2, round(1 / t)) for t in targets})
    methods = [
        ours_method("always", lambda _: "always", "reuse", [None]),
        ours_method("learned-policy", lambda t: LearnedPolicy(out / "policy", target=t), predictor, targets),
        ours_method("searched-schedule", lambda t: "schedule:" + searched[t], predictor, sorted(searched)),
        ours_method("fixed+taylor2", lambda n: f"fixed:{n}", "taylor:2", intervals),
        ours_method("fixed+learned", lambda n: f"fixed:{n}", f"learned:{out / 'predictors'}", intervals),
        fewer_steps(),
    ]
    if predictor.startswith("gated:"):
        methods.insert(-1, ours_method("fixed+gated", lambda n: f"fixed:{n}", predictor, intervals))
    methods[-1].knobs = targets
    bench = BenchConfig(samples=config.bench_samples, steps=config.steps, guidance=None,
                        seed=20_000, batch_size=config.batch_size, repeats=config.bench_repeats,
                        call_kwargs=config.call_kwargs)
    from cachepilot.embedded.quality import embedded_quality

    rows = run_bench(pipe, methods, bench, conditions=list(evaluation.conditions),
                     quality=embedded_quality(pipe))  # the embedded models' judges; None for users' pipelines
    meta = {"samples": bench.samples, "steps": bench.steps, "conditions": evaluation.source,
            "evaluation_conditions": len(evaluation), "repeats": bench.repeats}
    write_report(rows, out / "bench", meta)
    return rows


def write_readme(pipe, out: Path) -> None:
    """The checkpoint's README: model, conditions, budgets, stage wall times and the bench figures."""
    record = json.loads((out / "cachepilot_config.json").read_text())
    rows = json.loads((out / "bench" / "results.json").read_text())
    bench = rows[0]
    (out / "README.md").write_text(_readme(pipe, out, record, rows, bench))


def _readme(pipe, out: Path, record: dict, rows: list[dict], bench: dict) -> str:
    return f"""# cachepilot cache for a {type(pipe).__name__} ({record['backbone']['backbone_class']})

Fitted by `cachepilot fit` ({record['num_steps']} steps, call kwargs {json.dumps(record['call_kwargs'])}).
Conditions: {record['conditions']['train']} train / {record['conditions']['validation']} validation /
{record['conditions']['evaluation']} evaluation, split by {record['split_by']} (`conditions.json`).
Stage wall times (s): {json.dumps(record['stage_seconds'])}.

Use it:

```python
import cachepilot
cachepilot.enable(pipe, checkpoint="{out}", speed=0.3)   # target compute fraction
```

## Bench on the evaluation conditions (never trained on), held-out seeds

{bench['samples']} samples, {bench['steps']} steps, batch {bench['batch_size']}; PSNR / SSIM vs. full compute of
the same seed and condition; speed-up measured in the same process, alternating with full compute.

{markdown_table(rows)}
"""
