"""Bench methods for DBCache-style structures (`F<n>B<m>`: the first n / last m blocks computed at every step).

The runner counts real block evaluations, so a structure's always-computed blocks are in each row's compute
fraction: `F1B0+fixed+taylor2` at `fixed:3` costs more than `fixed+taylor2` at `fixed:3`, and the two are compared
at equal compute (`best_at_budget`), never at equal interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import cachepilot
from cachepilot.bench.methods import Method

INTERVALS = (2, 3, 4, 5, 6, 8, 10)
DELTAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
STRUCTURES = ("F1B0", "F1B1", "F2B0")
PREDICTORS = {"reuse": "reuse", "taylor2": "taylor:2"}
GROUP_PREDICTORS = {**PREDICTORS, "taylor1": "taylor:1"}  # Taylor-1: the best whole-stack one on digits


def structure_method(structure: str, policy: str, predictor: str, knobs: Sequence) -> Method:
    """`<structure>+<policy>+<predictor>`: e.g. F1B0+fixed+taylor2 over the fixed intervals."""
    spec = PREDICTORS[predictor]

    def apply(pipe, knob):
        cachepilot.enable(pipe, f"{policy}:{knob}", spec, structure=structure)
        return pipe

    return Method(f"{structure}+{policy}+{predictor}", list(knobs), apply, cachepilot.disable)


def structure_methods() -> list[Method]:
    """Every structure on the fixed intervals with reuse and Taylor-2, and on the probe threshold with reuse
    (DBCache's own pairing: the first blocks' change decides, their output carries the reused residual)."""
    fixed = [structure_method(s, "fixed", p, INTERVALS) for s in STRUCTURES for p in PREDICTORS]
    return fixed + [structure_method(s, "threshold", "reuse", DELTAS) for s in STRUCTURES]


GROUP_SPLITS = ("G3,3", "G2,4", "G4,2")  # two groups of the embedded models' six blocks
GROUP_INTERVALS = (1, 2, 3, 4, 6)


def group_method(split: str, predictor: str, intervals: Sequence[int] = GROUP_INTERVALS) -> Method:
    """`<split>+fixed+<predictor>` over every pair of distinct intervals, one per group (knob `a|b`: the first group
    computed every a steps, the second every b; equal intervals are the whole stack's `fixed` rows)."""
    spec = GROUP_PREDICTORS[predictor]
    knobs = [f"{a}|{b}" for a in intervals for b in intervals if a != b]

    def apply(pipe, knob):
        cachepilot.enable(pipe, "|".join(f"fixed:{k}" for k in knob.split("|")), spec, structure=split)
        return pipe

    return Method(f"{split}+fixed+{predictor}", knobs, apply, cachepilot.disable)


def group_methods() -> list[Method]:
    """Every two-group split of six blocks on per-group fixed intervals, with reuse, Taylor-1 and Taylor-2."""
    return [group_method(split, p) for split in GROUP_SPLITS for p in GROUP_PREDICTORS]


def best_at_budget(rows: list[dict], budgets: Sequence[float], slack: float = 0.02) -> dict[str, dict[float, dict]]:
    """{family: {budget: the row of highest PSNR whose compute fraction is <= budget + slack}}, where a family is a
    structure (`F1B0`, `G3,3`, ...) or `whole stack` (every other cachepilot training-free row: fixed / threshold /
    TaylorSeer schedules with any forecaster, the learned rows excluded) or `fewer-steps`."""
    best: dict[str, dict[float, dict]] = {}
    for row in rows:
        method = str(row["method"])
        if row.get("psnr") is None or method in ("always",) or "learned" in method or "searched" in method:
            continue
        if method.startswith(("F", "G")) and "+" in method:
            family = method.split("+")[0]
        elif method == "fewer-steps":
            family = method
        elif method.startswith(("diffusers-", "cache-dit")):
            family = "peers"
        else:
            family = "whole stack"
        for budget in budgets:
            if row["compute_fraction"] <= budget + slack:
                held = best.setdefault(family, {}).get(budget)
                if held is None or row["psnr"] > held["psnr"]:
                    best[family][budget] = row
    return best


def budget_table(rows: list[dict], budgets: Sequence[float] = (0.2, 0.3, 0.4, 0.5)) -> str:
    """Markdown: per family, the best PSNR at compute <= each budget (block evaluations), with the method."""
    best = best_at_budget(rows, budgets)
    lines = ["| family | " + " | ".join(f"<= {b:.1f}" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for family, entries in sorted(best.items()):
        cells = []
        for budget in budgets:
            row = entries.get(budget)
            cells.append("—" if row is None else
                         f"{row['psnr']:.2f} dB ({row['method']} {row['knob']}, {row['compute_fraction']:.2f})")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cachepilot.bench.structures OUT/results.json
    import json
    import sys

    print(budget_table(json.loads(open(sys.argv[1]).read())))
