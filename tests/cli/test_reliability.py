"""Bad input and interruptions end in one line (exit 2, or 130 after a saved checkpoint), never a traceback."""

import json
import subprocess
import sys

import pytest

from cachepilot.cli import main


def _one_line(capsys, message: str) -> str:
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    return err


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "some_file"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize("argv", [
    ["collect", "--out", "{f}/x"],
    ["train", "backbone", "--out", "{f}/x", "--work-dir", "{t}/w"],
    ["train", "backbone", "--out", "{t}/o", "--work-dir", "{f}/w"],
    ["train", "predictors", "--out", "{f}/x", "--work-dir", "{t}/w"],
    ["train", "predictors", "--out", "{t}/o", "--work-dir", "{f}/w"],
    ["train", "classifier", "--out", "{f}/x"],
    ["export", "--out", "{f}/x"],
])
def test_an_output_under_a_file_is_refused_before_any_work(argv, a_file, tmp_path, capsys):
    argv = [a.format(f=a_file, t=tmp_path) for a in argv]
    assert main(argv) == 2
    _one_line(capsys, f"is under the file {a_file}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some_file"]  # nothing created


@pytest.mark.parametrize("out, message", [("grid", "no image extension"), ("g.unknownext", "unknown image extension")])
def test_generate_refuses_an_image_name_pil_cannot_write(tmp_path, capsys, out, message):
    assert main(["generate", "--classes", "1", "--steps", "2", "--out", str(tmp_path / out)]) == 2
    _one_line(capsys, message)


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_device_is_one_line(capsys):
    assert main(["generate", "--classes", "1", "--steps", "2", "--out", "/dev/full"]) == 2
    _one_line(capsys, "no image extension")
    assert main(["evaluate", "--samples-per-class", "2", "--steps", "2", "--json", "/dev/full"]) == 2
    _one_line(capsys, "cannot write /dev/full")


def test_search_schedule_at_one_step(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["search-schedule", "--steps", "1", "--samples", "1", "--targets", "0.5", "--predictor", "taylor:1",
                 "--max-sweeps", "0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["schedules"]["0.5"]["mask"] == "1"


def test_warmup_mask_with_no_room_for_a_warm_up():
    from cachepilot.train.schedule_search import start_masks, warmup_mask

    assert warmup_mask(1, 1, 2, open_end=True) == [True]
    assert warmup_mask(5, 1, 3) == [True, False, False, False, False]
    assert all(sum(m) == 1 for m in start_masks(4, 1, compute_last=False))


@pytest.mark.parametrize("argv, message", [
    (["train", "backbone", "--layers", "0"], "--layers must be >= 1, got 0"),
    (["train", "backbone", "--train-steps", "0"], "--train-steps must be >= 1"),
    (["train", "predictors", "--train-steps", "0"], "--train-steps must be >= 1"),
    (["train", "policy", "--timesteps", "0"], "--timesteps must be >= 1"),
    (["train", "policy", "--envs", "0"], "--envs must be >= 1"),
    (["generate", "--speed", "1e-9"], "got 1e-09"),
    (["generate", "--policy", "learned:abc"], "must be a number"),
])
def test_messages_name_the_flags_that_exist(tmp_path, capsys, argv, message):
    extra = {"train": ["--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")],
             "generate": ["--out", str(tmp_path / "g.png")]}[argv[0]]
    assert main(argv + extra) == 2
    err = _one_line(capsys, message)
    for wrong in ("--total-timesteps", "--max-steps", "--num-layers", "--num-envs"):
        assert wrong not in err


def test_old_flag_spellings_still_work_with_one_warning(tmp_path, capsys):
    assert main(["train", "backbone", "--steps", "0", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--steps is deprecated, use --train-steps" in err and "--train-steps must be >= 1" in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint is deprecated, use --pipeline" in err and "not found" in err


def test_cache_alone_runs_its_learned_policy_and_says_so(tmp_path, capsys, monkeypatch):
    from cachepilot.checkpoints import DEFAULT_CACHE

    out = tmp_path / "g.png"
    assert main(["generate", "--classes", "1", "2", "--steps", "6", "--cache", str(DEFAULT_CACHE),
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "running its policy at target 0.3" in captured.err
    assert "learned@0.3" in captured.out and out.exists()


class _ClassConditional:
    """A class-conditional pipeline that does not list its classes (a DiTPipeline without id2label)."""

    def __call__(self, class_labels, num_inference_steps: int = 50):
        raise AssertionError("never sampled")


def test_a_class_conditional_pipeline_without_labels_is_told_to_pass_classes():
    from cachepilot.cli.common import conditions_of
    from cachepilot.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="takes class labels"):
        conditions_of(_ClassConditional(), None)


def test_generate_on_a_text_pipeline_without_prompts_says_pass_prompts(tmp_path, capsys):
    from ..tiny_pipelines import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd3", tmp_path / "pipe")
    for extra in ([], ["--classes", "1", "2"]):
        assert main(["generate", "--pipeline", str(pipe), "--steps", "2", "--out", str(tmp_path / "g.png")]
                    + extra) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]  # (diffusers' loading logs may come first)
        assert last.startswith("cachepilot: error: ") and "is conditioned on text: pass --prompts" in last


def test_train_policy_on_another_pipeline_defaults_to_a_training_free_predictor(monkeypatch, tmp_path, pipe, capsys):
    from cachepilot import loading
    from cachepilot.train import policy as policy_module

    seen = {}
    monkeypatch.setattr(loading, "load_pipeline", lambda *args, **kwargs: pipe)
    monkeypatch.setattr(policy_module, "train_policy", lambda config, work_dir, **kwargs: seen.update(config=config))
    monkeypatch.setattr(policy_module, "export_policy", lambda *args, **kwargs: None)
    argv = ["train", "policy", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    assert main(argv + ["--pipeline", "some/other-model"]) == 0
    assert seen["config"].predictor == "taylor:2" and "--predictor taylor:2" in capsys.readouterr().err
    assert main(argv) == 0
    assert seen["config"].predictor == "learned"
    assert main(argv + ["--pipeline", "x", "--predictor", "taylor:1"]) == 0
    assert seen["config"].predictor == "taylor:1"


def test_fit_refused_leaves_no_output_directory(tmp_path, capsys):
    assert main(["fit", "--out", str(tmp_path / "f"), "--prompts", str(tmp_path / "missing.txt"), "--smoke"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "f").exists()


def test_fit_resolution_line():
    from types import SimpleNamespace

    from cachepilot.cli.fit import resolution

    digits = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(sample_size=8)), vae=None)
    flux = SimpleNamespace(default_sample_size=128, vae_scale_factor=8)
    assert resolution(digits, {}) == "8x8" and resolution(flux, {}) == "1024x1024"
    assert resolution(flux, {"height": 512, "width": 256}) == "512x256"
    assert resolution(object(), {}) == "the pipeline's default resolution"


def test_help_loads_no_torch():
    code = "import sys; from cachepilot.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
