import json

from experiments.whole_schedules import main
from cachepilot.predictors.gated import GATE_FILE, SCHEDULE_CHOICES, check_gate_table, check_schedule_choices


def test_scores_every_candidate_on_training_and_held_out_rows_and_writes_the_gate(tmp_path, capsys):
    out = tmp_path / "scores_4.json"
    main(["--steps", "4", "--intervals", "2", "--train", "2", "--held", "2", "--specs", "fixed:2", "learned:0.5",
          "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["train"] == 2 and record["held"] == 2 and record["counts"]["4"]["choices"]
    entries = record["schedules"]["4"]
    assert set(entries) == {"fixed:2", "learned@0.5"}
    for entry in entries.values():
        assert set(entry["scores"]) == set(SCHEDULE_CHOICES)
        for scored in entry["scores"].values():
            assert len(scored["held_per"]) == 2 and 0 < scored["cf_held"] <= 1
            assert 5 < scored["train"] <= 100 and 5 < scored["held"] <= 100
        train = {c: s["train"] for c, s in entry["scores"].items()}
        assert train[entry["choice"]] == max(train.values())  # the training rows decide
    # a candidate the file lacks (a forecaster added later): only it is scored on --resume, the rest kept
    mean_of_both = record["schedules"]["4"]["fixed:2"]["scores"].pop("taylor:1.5")
    learned = dict(entries["learned@0.5"])
    record["schedules"]["4"]["fixed:2"]["scores"]["taylor:1"]["train"] = 99.0  # kept, so it becomes the choice
    out.write_text(json.dumps(record))
    main(["--steps", "4", "--intervals", "2", "--train", "2", "--held", "2", "--specs", "fixed:2", "learned:0.5",
          "--out", str(out), "--resume"])
    resumed = json.loads(out.read_text())["schedules"]["4"]
    assert resumed["fixed:2"]["scores"]["taylor:1.5"]["held_per"] == mean_of_both["held_per"]  # the same sampling
    assert resumed["fixed:2"]["choice"] == "taylor:1" and resumed["learned@0.5"] == learned
    entries = resumed
    main(["--report", str(out), "--write-gate", str(tmp_path)])
    assert "vs best Taylor" in capsys.readouterr().out
    gate = json.loads((tmp_path / GATE_FILE).read_text())
    assert gate["samples"] == 2 and check_gate_table({k: e["choices"] for k, e in gate["counts"].items()}, "t")
    assert check_schedule_choices({k: {s: e["choice"] for s, e in v.items()} for k, v in gate["schedules"].items()},
                                  "t")[4]["fixed:2"] == entries["fixed:2"]["choice"]


def test_train_0_scores_the_shipped_gate_on_later_held_out_samples(tmp_path, capsys):
    """--train 0: no choice made, the cache's gate against Taylor-1 / Taylor-2 on held-out samples K.. (seeds
    20,000 + K..): the first held-out rows of a run from K equal those of a run from 0 at index K."""
    import pytest

    first, later = tmp_path / "first.json", tmp_path / "later.json"
    main(["--steps", "4", "--train", "0", "--held", "3", "--specs", "fixed:2", "--out", str(first)])
    main(["--steps", "4", "--train", "0", "--held", "2", "--held-offset", "1", "--specs", "fixed:2",
          "--out", str(later)])
    one, two = (json.loads(p.read_text()) for p in (first, later))
    assert one["counts"] == {} and two["held_offset"] == 1
    entry = two["schedules"]["4"]["fixed:2"]
    assert entry["choice"] == "gate" and entry["gate_choice"] == "table"  # no 4-step schedule is stored: the table
    assert set(entry["scores"]) == {"gate", "taylor:1", "taylor:2", "taylor:1.5"}
    assert "train" not in entry["scores"]["gate"]
    for name, scored in entry["scores"].items():
        assert scored["held_per"] == one["schedules"]["4"]["fixed:2"]["scores"][name]["held_per"][1:], name
    main(["--report", str(later)])
    assert "gate=table" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--report", str(later), "--write-gate", str(tmp_path)])


def test_versus_training_free_takes_the_best_schedule_within_the_policys_compute():
    import pytest

    from experiments.whole_schedules import versus_training_free

    def scored(held_per, cf):
        return {"held": sum(held_per) / len(held_per), "held_per": held_per, "cf_held": cf}

    record = {"schedules": {"50": {
        "learned@0.3": {"spec": "learned:0.3", "choice": "gate", "scores": {"gate": scored([30.0, 32.0], 0.3)}},
        "fixed:3": {"spec": "fixed:3", "choice": "taylor:1",
                    "scores": {"taylor:1": scored([29.0, 30.0], 0.3), "taylor:1.5": scored([31.0, 30.0], 0.3),
                               "learned": scored([40.0, 40.0], 0.3)}},  # the head is not training-free
        "schedule:101": {"spec": "searched:S.json", "choice": "taylor:1",
                         "scores": {"taylor:1": scored([29.0, 32.0], 0.3)}},
        "threshold:0.05": {"spec": "threshold:0.05", "choice": "taylor:1",
                           "scores": {"taylor:2": scored([50.0, 50.0], 0.8)}},  # more compute than the policy
    }}}
    (row,) = versus_training_free(record)
    assert row["best"] == "fixed:3+taylor:1.5" and row["best_held"] == 30.5
    assert row["difference"] == pytest.approx(0.5) and row["se"] == pytest.approx(1.5)
    assert row["searched_held"] == 30.5 and row["vs_searched"] == pytest.approx(0.5) and row["vs_searched_se"] == 0.5
