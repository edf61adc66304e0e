"""The full recipe's mask choice: the head's searched mask against the lean search's Taylor-1 mask, each with its
best forecaster on the gate's samples."""

import json

import pytest

from cachepilot import InvalidInputError
from cachepilot.checkpoints import DEFAULT_PREDICTOR
from cachepilot.driver import SamplingDriver
from cachepilot.predictors.gated import GATE_FILE
from cachepilot.predictors.learned import Learned
from cachepilot.searched import SearchedSchedules, mask_string
from cachepilot.train.calibrate_forecaster import calibrate_gate
from cachepilot.train.lean import lean_search
from cachepilot.train.mask_choice import CHOICE_KEY, choose_masks

CONDITIONS = [{"class_labels": c} for c in range(3)]


def test_the_mask_that_scores_higher_with_its_best_forecaster_is_kept(pipe, tmp_path):
    head = tmp_path / "head"
    Learned.from_pretrained(DEFAULT_PREDICTOR).save_pretrained(head)
    calibrate_gate(pipe, head, CONDITIONS, [8], intervals=[2], samples=2, out=head, progress=False)
    tables = json.loads((head / GATE_FILE).read_text())["counts"]
    taylor = lean_search(SamplingDriver(pipe, 8), CONDITIONS, [0.25], samples=2, forecasters=("taylor:1",))
    path = tmp_path / "searched_schedules.json"
    searched = SearchedSchedules(8, f"gated:{head}")
    searched.add(0.5, "11110000", 30.0)  # every compute at the start: the best starts beat it
    searched.add(0.25, taylor.schedules[0.25][0], 40.0)  # the head found Taylor-1's best start: one candidate
    searched.write(path)

    record = choose_masks(pipe, head, path, CONDITIONS, search_samples=2, starts=3, progress=False)
    gate = json.loads((head / GATE_FILE).read_text())
    entries = gate["schedules"]["8"]
    # the spacing table kept as it was (its own intervals): the candidates were scored on the gate's own samples
    assert gate["counts"] == tables and gate["intervals"] == [2]
    for target, choice in record.items():
        scores = {source: c["psnr"] for source, c in choice["candidates"].items()}
        for source, candidate in choice["candidates"].items():  # each scored with its best forecaster
            entry = entries[f"schedule:{candidate['mask']}"]
            assert candidate["forecaster"] == entry["choice"]
            assert candidate["psnr"] == pytest.approx(max(entry["psnr"].values()))
        best = max(scores.values())
        assert scores[choice["kept"]] == best and (choice["kept"] == "head" or scores["head"] < best)
    assert set(record["0.5"]["candidates"]) == {"head", "taylor:1 start 1", "taylor:1 start 2", "taylor:1 start 3"}
    assert record["0.5"]["kept"] != "head"
    # the head's mask is the best start: not scored twice
    assert "taylor:1 start 1" not in record["0.25"]["candidates"]
    assert record["0.25"]["candidates"]["head"]["mask"] == mask_string(taylor.schedules[0.25][0])

    written = SearchedSchedules.read(path)
    kept = record["0.5"]["candidates"][record["0.5"]["kept"]]
    assert written.masks()[0.5] == kept["mask"] != "11110000"
    assert written.schedules["0.5"]["train_psnr"] == pytest.approx(kept["psnr"])
    assert written.settings[CHOICE_KEY]["samples"] == gate["samples"] == 2
    assert written.settings[CHOICE_KEY]["targets"] == json.loads(json.dumps(record))


def test_without_a_calibrated_gate_it_says_so_before_sampling(pipe, tmp_path):
    head = tmp_path / "head"
    Learned.from_pretrained(DEFAULT_PREDICTOR).save_pretrained(head)
    path = tmp_path / "searched_schedules.json"
    SearchedSchedules(8, f"gated:{head}").write(path)
    with pytest.raises(InvalidInputError, match="gate stage"):
        choose_masks(pipe, head, path, CONDITIONS, search_samples=2, progress=False)
