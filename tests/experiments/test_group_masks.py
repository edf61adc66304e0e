"""experiments.group_masks: the nested masks and the comparison at equal compute."""

import math

from experiments.group_masks import forecaster_methods, methods, nest, versus_best_forecaster, versus_whole


def test_nest_is_the_union_of_two_masks():
    assert nest("1001", "1100") == "1101"


def test_split_rows_are_compared_with_the_whole_stack_interpolated_at_their_compute():
    rows = [{"method": "searched", "knob": 0.2, "compute_fraction": 0.2, "psnr": 30.0},
            {"method": "searched", "knob": 0.4, "compute_fraction": 0.4, "psnr": 40.0},
            {"method": "G3,3+searched", "knob": "0.2|0.4", "compute_fraction": 0.3, "psnr": 33.0},
            {"method": "G3,3+searched", "knob": "0.4|0.5", "compute_fraction": 0.45, "psnr": 41.0}]
    (_, _, x, psnr, gain), (*_, outside) = versus_whole(rows)
    assert (x, psnr, gain) == (0.3, 33.0, -2.0) and math.isnan(outside)


def test_every_split_gets_every_ordered_pair_of_targets():
    made = methods({0.2: "1010", 0.4: "1110"}, "taylor:1", splits=("G3,3",))
    assert [m.name for m in made] == ["searched", "G3,3+searched"] and made[1].knobs == ["0.2|0.4", "0.4|0.2"]


def test_per_group_forecasters_run_one_mask_and_are_compared_with_the_best_whole_stack_forecaster():
    made = forecaster_methods({0.2: "1010"}, ["reuse", "taylor:1"], splits=("G3,3",))
    assert [m.name for m in made] == ["searched+reuse", "searched+taylor:1", "G3,3+reuse|taylor:1",
                                      "G3,3+taylor:1|reuse"]
    rows = [{"method": "searched+reuse", "knob": 0.2, "psnr": 30.0},
            {"method": "searched+taylor:1", "knob": 0.2, "psnr": 32.0},
            {"method": "G3,3+reuse|taylor:1", "knob": 0.2, "psnr": 32.5}]
    assert versus_best_forecaster(rows) == [("G3,3+reuse|taylor:1", 0.2, 32.5, 0.5)]
