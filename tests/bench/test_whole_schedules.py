import json

from cachepilot.bench.whole_schedules import main
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
