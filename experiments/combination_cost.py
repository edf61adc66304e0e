"""What one forecast of the combination forecaster costs against one block-stack evaluation, next to its bases.

    OMP_NUM_THREADS=1 python -m experiments.combination_cost [--tokens 1024 --dim 512 --rows 2 --rounds 7]

`experiments.forecaster_cost` measures it: a combination of the default bases with random non-zero weights at
every step (every base runs at every forecast, the worst case: a zero weight skips its base) is written for the
context that script forecasts in (50 steps, no policy) and timed with the bases themselves.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from cachepilot.predictors.combination import DEFAULT_BASES, Combination
from experiments.forecaster_cost import main as forecaster_cost


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    weights = torch.rand(50, len(DEFAULT_BASES), generator=torch.Generator().manual_seed(0)) + 0.1
    with tempfile.TemporaryDirectory() as directory:
        Combination(DEFAULT_BASES, {(50, ""): weights}).save_pretrained(directory)
        specs = [*DEFAULT_BASES, f"combo:{directory}"]
        result = forecaster_cost([*argv, "--specs", *specs])
    result["forecast"]["combo"] = result["forecast"].pop(f"combo:{directory}")
    return result


if __name__ == "__main__":
    main()
