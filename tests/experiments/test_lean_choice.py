"""The lean-choice report: per point, how far each statistic's pick lands below the best held out."""

import json

from experiments.lean_choice import report


def test_the_report_scores_each_statistics_pick_against_the_best_held_out(tmp_path, capsys):
    # start 0 steady, start 1 suits one sample: the mean picks 1, the median 0; held out 0 is the better
    entry = {"starts_train": [[40.0, 40.0, 40.0, 40.0], [55.0, 38.0, 38.0, 38.0]], "starts_held": [41.0, 37.0],
             "forecasters_train": [[40.0, 40.0, 40.0, 40.0], [46.0, 39.5, 39.5, 39.5]],
             "forecasters_held": [41.0, 40.0]}
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"model": "scenes", "steps": 50, "targets": {"0.2": entry}}))
    report([str(path)])
    out = capsys.readouterr().out
    assert "mask by mean: -4.00 dB on average over 1 points" in out
    assert "mask by median: +0.00 dB" in out
    assert "forecaster by mean: -1.00 dB" in out  # +1.13 mean gain, all of it one sample's
    assert "forecaster: choose_forecaster: +0.00 dB" in out  # within its standard error: Taylor-1 kept
