"""experiments.lean_pairs: the mask "fewer steps" evaluates, and what each choice rule picks."""

import numpy as np

from experiments.lean_pairs import fewer_steps_mask, picks


def test_the_fewer_steps_mask_computes_the_nearest_grid_steps():
    assert fewer_steps_mask(20, 6) == [c == "1" for c in "10010001001001000100"]
    assert sum(fewer_steps_mask(50, 10)) == 10


def test_each_rule_picks_by_its_statistic_and_the_held_out_best_is_reported():
    # 3 masks x 2 forecasters x 3 samples; Taylor-1 (column 0) ranks mask 0 first, mask 2 holds the best median
    train = np.array([[[30, 30, 30], [29, 29, 29]],
                      [[20, 20, 20], [21, 21, 21]],
                      [[25, 25, 25], [40, 41, 42]]], dtype=float)
    held = np.array([[28.0, 27.0], [20.0, 22.0], [24.0, 35.0]])
    chosen = picks(train, held)
    assert chosen["lean"] == 28.0  # mask 0, Taylor-1 kept (the other's gain is negative)
    assert chosen["top-3"] == 35.0  # mask 2 with its second forecaster: +16 dB beyond its standard error
    assert chosen["all pairs"] == 35.0 and chosen["best held out"] == 35.0
