"""The old home of `generate`, `evaluate` and `bench` (now `cachepilot.cli.<command>`), kept for importers."""

from cachepilot.cli.bench import bench, bench_conditions
from cachepilot.cli.evaluate import evaluate
from cachepilot.cli.generate import generate

__all__ = ["bench", "bench_conditions", "evaluate", "generate"]
