"""The lean fit's mask and forecaster chosen together: every start with every lean forecaster, on 4 training samples
and on held-out ones, and the held-out PSNR of what each choice rule picks.

The lean fit chooses the mask with Taylor-1 (best median of its training samples) and then the forecaster on that
mask (`choose_forecaster`). On a model where Taylor-1 diverges at long skips (the scenes model at 20 steps) the mask
Taylor-1 ranks first may not be the one another forecaster does best on. This scores every (start, forecaster) pair,
plus the mask that computes the grid steps nearest to a schedule of as many steps as the budget's computes (what
"fewer steps" evaluates, on this count's grid), and reports, per target, the held-out PSNR of:

- `lean`: the lean fit's rule (mask by Taylor-1's median, then `choose_forecaster` on it);
- `top-3`: the three best masks by Taylor-1's median, each with `choose_forecaster`'s pick, the best median kept;
- `all pairs`: the pair with the best training median;
- `best held out`: the best pair held out (no rule reaches it; the headroom of the choice).

    OMP_NUM_THREADS=1 python -m experiments.lean_pairs --model scenes --steps 20 --out lean_pairs_scenes_20.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cachepilot.policies.budget import budget_computes
from cachepilot.train.lean import LEAN_FORECASTERS, choose_forecaster, lean_starts

from experiments.lean_choice import add_scoring_args, scorers


def fewer_steps_mask(num_steps: int, computes: int) -> list[bool]:
    """Computes at the grid steps nearest to a `computes`-step schedule's (uniform in the unshifted time, as the
    flow-matching schedulers space their steps before the shift)."""
    picked = {min(num_steps - 1, round(i * num_steps / computes)) for i in range(computes)}
    return [i in picked for i in range(num_steps)]


def picks(train: np.ndarray, held: np.ndarray) -> dict[str, float]:
    """train: (masks, forecasters, samples) PSNR; held: (masks, forecasters) mean PSNR -> each rule's held-out PSNR
    (forecaster 0 is Taylor-1, the one masks are ranked with)."""
    medians = np.median(train, axis=2)
    by_taylor = np.argsort(-medians[:, 0], kind="stable")
    first = int(by_taylor[0])
    out = {"lean": held[first, choose_forecaster(train[first])]}
    top = [(int(m), choose_forecaster(train[int(m)])) for m in by_taylor[:3]]
    best = max(top, key=lambda pair: medians[pair])
    out["top-3"] = held[best]
    out["all pairs"] = held[np.unravel_index(int(np.argmax(medians)), medians.shape)]
    out["best held out"] = float(held.max())
    return {name: float(value) for name, value in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_scoring_args(parser, steps=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    on_train, on_held, record = scorers(args)
    for target in args.targets:
        masks = lean_starts(args.steps, target)
        masks.append(fewer_steps_mask(args.steps, budget_computes(target, args.steps)))
        train_scores = np.array([[on_train(m, f) for f in LEAN_FORECASTERS] for m in masks])
        held_scores = np.array([[on_held(m, f) for f in LEAN_FORECASTERS] for m in masks])
        chosen = picks(train_scores, held_scores)
        record["targets"][str(target)] = {
            "masks": ["".join("1" if on else "0" for on in m) for m in masks], "forecasters": list(LEAN_FORECASTERS),
            "train": train_scores.tolist(), "held": held_scores.tolist(), "picks": chosen}
        print(f"{args.model} {args.steps} / {target}: " + ", ".join(f"{k} {v:.2f}" for k, v in chosen.items())
              + f"; fewer-steps mask's best held {held_scores[-1].max():.2f}", flush=True)
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
