import pytest
from PIL import Image

from cachepilot.cli import main


def test_generate_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "--classes", "1", "2", "3", "--steps", "3", "--out", str(out)]) == 0
    grid = Image.open(out)
    assert grid.width > grid.height > 8 * 8  # three upscaled digits in a row
    assert "full compute" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["generate", "--classes", "10"], "unknown class id 10"),
    (["generate", "--steps", "0"], "num_inference_steps"),
    (["generate", "--guidance", "-1"], "guidance_scale"),
    (["generate", "--checkpoint", "/nonexistent/ckpt"], "not found"),
    (["evaluate", "--samples-per-class", "1"], "samples per class"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path / "g.png")] if argv[0] == "generate" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_generate_with_a_cache_policy_reports_speedup_and_psnr(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "--classes", "1", "2", "--steps", "6", "--policy", "fixed:2", "--predictor", "taylor:1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "compute fraction 0.50" in printed and "PSNR" in printed and out.exists()


def test_generate_with_the_learned_policy_takes_the_shipped_cache_forecaster_by_its_rule(tmp_path, capsys):
    """No --cache: the shipped digits cache, its forecaster as `enable` loads it (the gated head), unless named."""
    from cachepilot.cache_checkpoint import CacheCheckpoint

    expected = CacheCheckpoint.from_pretrained().predictor_spec(0.3)
    assert expected.startswith("gated:")
    for extra, spec in (([], expected), (["--predictor", "taylor:2"], "taylor:2")):
        assert main(["generate", "--classes", "1", "--steps", "6", "--policy", "learned", "--speed", "0.3",
                     "--out", str(tmp_path / "g.png"), *extra]) == 0
        assert f"learned@0.3 + {spec}:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["generate", "--policy", "fixed:0"], "interval must be"),
    (["generate", "--policy", "threshold:-1"], "delta must be"),
    (["generate", "--policy", "fixed:2", "--predictor", "taylor:5"], "order must be"),
    (["bench", "--methods", "nope"], "unknown bench method"),
    (["generate", "--speed", "1.5"], "(0, 1]"),
    (["generate", "--policy", "fixed:2", "--speed", "0.3"], "--speed"),
    (["export", "--work-dir", "/nonexistent/run"], "no PPO checkpoint"),
])
def test_bad_cache_options_are_one_clear_line(tmp_path, capsys, argv, message):
    extra = ["--out", str(tmp_path / "x")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_fit_bad_input_is_one_clear_line_before_any_work(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["fit", "--out", str(tmp_path / "a"), "--prompts", str(empty), "--smoke"]) == 2
    assert "holds no conditions" in capsys.readouterr().err
    unsupported = tmp_path / "unet-pipe"
    unsupported.mkdir()
    (unsupported / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert main(["fit", "--out", str(tmp_path / "b"), "--pipeline", str(unsupported), "--smoke"]) == 2
    assert "could not be loaded" in capsys.readouterr().err
    assert main(["fit", "--out", str(tmp_path / "c"), "--pipeline", "/nonexistent/pipe"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["fit", "--out", str(tmp_path / "d"), "--steps", "2"]) == 2
    assert "steps must be >= 4" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("argv, message", [
    (["generate", "--steps", "1001"], "num_train_timesteps"),
    (["evaluate", "--steps", "1001"], "num_train_timesteps"),
    (["bench", "--steps", "1001", "--methods", "always"], "num_train_timesteps"),
    (["collect", "--steps", "1001"], "num_train_timesteps"),
    (["generate", "--device", "bogus"], "unknown device"),
    (["evaluate", "--device", "bogus"], "unknown device"),
    (["generate", "--device", "cuda:99"], "cuda"),
    (["collect", "--guidance", "nan"], "guidance_scale"),
    (["collect", "--shard-index", "99"], "shard-index"),
    (["search-schedule", "--samples", "0"], "--samples"),
    (["search-schedule", "--targets", "0.5", "1.5"], "(0, 1]"),
    (["search-schedule", "--select-samples", "-1"], "--select-samples"),
    (["train", "backbone", "--accelerator", "bogus"], "unknown accelerator"),
])
def test_more_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    out = {"generate": ["--out", str(tmp_path / "g.png")], "bench": ["--out", str(tmp_path / "b")],
           "collect": ["--out", str(tmp_path / "c")], "search-schedule": ["--out", str(tmp_path / "s.json")],
           "train": ["--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]}.get(argv[0], [])
    assert main(argv + out) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "c" / "collect_config.json").exists()  # a refused collect leaves nothing behind
    assert not (tmp_path / "s.json").exists()


def test_search_schedule_init_from_another_step_count_is_refused_before_loading(tmp_path, capsys):
    import json

    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"num_steps": 20, "schedules": {"0.3": {"mask": "1" * 6 + "0" * 14}}}))
    assert main(["search-schedule", "--steps", "50", "--init", str(earlier), "--pipeline", str(tmp_path / "none"),
                 "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "searched at [20] steps, not 50" in err and "Traceback" not in err, err


def test_search_schedule_takes_the_distinct_masks_of_several_earlier_searches_as_starts(tmp_path, monkeypatch):
    import json

    from cachepilot.train import schedule_search

    starts = {}

    def fake_search(driver, conditions, target, samples, predictor="learned", extra_starts=(), **kwargs):
        starts[target] = extra_starts
        return [True, False, True, False], 40.0

    monkeypatch.setattr(schedule_search, "search_schedule", fake_search)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"num_steps": 4, "schedules": {"0.5": {"mask": "1100"}, "0.3": {"mask": "1001"}}}))
    second.write_text(json.dumps({"num_steps": 4, "schedules": {"0.5": {"mask": "1010"}, "0.3": {"mask": "1001"}}}))
    assert main(["search-schedule", "--targets", "0.5", "0.3", "0.7", "--steps", "4", "--samples", "1",
                 "--init", str(first), str(second), "--out", str(tmp_path / "s.json")]) == 0
    assert starts[0.5] == [[True, True, False, False], [True, False, True, False]]
    assert starts[0.3] == [[True, False, False, True]] and starts[0.7] == []


def test_search_schedule_writes_each_target_as_it_is_found(tmp_path, monkeypatch):
    import json

    from cachepilot.train import schedule_search

    calls = []

    def fake_search(driver, conditions, target, samples, predictor="learned", **kwargs):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while searching the second target
        return [True, False, True, False], 40.0

    monkeypatch.setattr(schedule_search, "search_schedule", fake_search)
    out = tmp_path / "s.json"
    assert main(["search-schedule", "--targets", "0.5", "0.3", "--steps", "4", "--samples", "1",
                 "--out", str(out)]) == 130
    assert json.loads(out.read_text())["schedules"] == {"0.5": {"mask": "1010", "train_psnr": 40.0}}


@pytest.mark.parametrize("schedules, message", [(["learned:0.3"], "--policy"), (["ts-schedule:x"], "bad schedule spec"),
                                                (["sometimes:2"], "unknown policy spec")])
def test_calibrate_forecaster_refuses_a_bad_schedule_before_loading(tmp_path, capsys, schedules, message):
    from cachepilot.checkpoints import DEFAULT_PREDICTOR
    from cachepilot.predictors.learned import Learned

    Learned.from_pretrained(DEFAULT_PREDICTOR).save_pretrained(tmp_path / "head")
    assert main(["calibrate-forecaster", str(tmp_path / "head"), "--schedules", *schedules,
                 "--pipeline", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
