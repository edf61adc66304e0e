import shutil

import pytest
import torch
from diffusers import DiTTransformer2DModel

import cachepilot
from cachepilot import CheckpointError
from cachepilot.predictors.learned import Learned
from cachepilot.train.collect import CollectConfig, collect
from cachepilot.train.predictors import PredictorConfig, PredictorDataModule, PredictorModule, train_predictors


@pytest.fixture(scope="module")
def collection(tmp_path_factory, pipe):
    out = tmp_path_factory.mktemp("collect")
    collect(pipe, out, CollectConfig(samples_per_policy=10, steps=10, policies=["always", "fixed:3"], num_shards=1,
                                     batch_size=10), progress=False)
    return out


def _loss(module: PredictorModule, batch: dict) -> float:
    with torch.no_grad():
        flat = module._flat(batch)
        return module.trajectory_error(module._forecast(flat), flat, batch["mask"].shape[0]).mean().item()


def test_training_lowers_the_trajectory_loss_and_exports(collection, tmp_path, pipe):
    config = PredictorConfig(max_steps=80, batch_size=8, val_every=40, lr=3e-3)
    data = PredictorDataModule(collection, config)
    data.setup()
    loader = data.val_dataloader()[1]
    batch = next(iter(loader))
    before = _loss(PredictorModule(128, 10, config), batch)
    module = train_predictors(collection, tmp_path / "head", tmp_path / "work", config, progress=False,
                              accelerator="cpu")
    assert _loss(module, batch) < 0.9 * before
    head = Learned.from_pretrained(tmp_path / "head")
    assert head.fingerprint["backbone_class"] == "DiTTransformer2DModel"
    cachepilot.enable(pipe, "fixed:3", head)
    try:
        images = pipe([1, 2], num_inference_steps=10, output_type="pt").images
        assert cachepilot.last_stats(pipe).forecast_steps > 0 and torch.isfinite(images).all()
    finally:
        cachepilot.disable(pipe)


def test_untrained_head_is_taylor_order_one(collection):
    config = PredictorConfig()
    data = PredictorDataModule(collection, config)
    data.setup()
    batch = next(iter(data.val_dataloader()[0]))
    module = PredictorModule(128, 10, config)
    flat = module._flat(batch)
    from types import SimpleNamespace

    from cachepilot.predictors.taylor import Taylor

    history = SimpleNamespace(residuals=flat["residuals"].transpose(0, 1), steps=flat["steps"].T,
                              count=flat["count"])
    with torch.no_grad():
        torch.testing.assert_close(module._forecast(flat), Taylor(1).predict(history, flat["step"]),
                                   atol=1e-5, rtol=1e-5)


def test_shipped_head_loads_and_rejects_other_backbones(tmp_path):
    from cachepilot.predictors.spec import make_predictor

    head = make_predictor("learned")
    assert isinstance(head, Learned) and head.spec() == "learned"
    other = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                  num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    with pytest.raises(CheckpointError, match="hidden_size"):
        cachepilot.enable(other, "fixed:2", head, num_inference_steps=4)
    same_size_other = DiTTransformer2DModel(num_attention_heads=4, attention_head_dim=32, in_channels=1,
                                            out_channels=1, num_layers=2, sample_size=8, patch_size=2,
                                            num_embeds_ada_norm=10)
    with pytest.raises(CheckpointError, match="backbone_config_hash"):
        cachepilot.enable(same_size_other, "fixed:2", head, num_inference_steps=4)


def test_corrupt_or_missing_head(tmp_path):
    from cachepilot.checkpoints import DEFAULT_PREDICTOR

    with pytest.raises(CheckpointError, match="no predictor head"):
        Learned.from_pretrained(tmp_path)
    shutil.copytree(DEFAULT_PREDICTOR, tmp_path / "head")
    (tmp_path / "head" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        Learned.from_pretrained(tmp_path / "head")


def test_nan_head_and_malformed_fingerprint_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from cachepilot.checkpoints import DEFAULT_PREDICTOR

    head = tmp_path / "nan"
    shutil.copytree(DEFAULT_PREDICTOR, head)
    path = head / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(path))
    weights["up.weight"][0, 0] = float("inf")
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match=r"up\.weight"):
        Learned.from_pretrained(head)
    for content, message in (("{not json", "not valid JSON"), ("[1, 2]", "fingerprint: .* must hold a JSON object")):
        bad = tmp_path / f"fp{len(content)}"
        shutil.copytree(DEFAULT_PREDICTOR, bad)
        (bad / "cachepilot_predictor.json").write_text(content)
        with pytest.raises(CheckpointError, match=message):
            Learned.from_pretrained(bad)
    extra = tmp_path / "extra"
    shutil.copytree(DEFAULT_PREDICTOR, extra)
    weights = load_file(str(extra / "diffusion_pytorch_model.safetensors"))
    del weights["up.weight"]
    save_file(weights, str(extra / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError):
        Learned.from_pretrained(extra)


def test_batch_larger_than_the_data_and_checkpoint_interval(collection, tmp_path, capsys):
    from cachepilot.cli import main

    assert main(["train", "predictors", "--data", str(collection), "--batch-size", "1000", "--steps", "4",
                 "--out", str(tmp_path / "head"), "--work-dir", str(tmp_path / "w"), "--accelerator", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no optimisation step" in err and "Traceback" not in err
    assert not (tmp_path / "head").exists()
    assert main(["train", "predictors", "--data", str(collection), "--batch-size", "4", "--steps", "6",
                 "--checkpoint-every", "2", "--out", str(tmp_path / "head2"), "--work-dir", str(tmp_path / "w2"),
                 "--accelerator", "cpu"]) == 0
    step = torch.load(next(p for p in (tmp_path / "w2").glob("*.ckpt") if p.name != "last.ckpt"),
                      weights_only=False)["global_step"]
    assert step in (2, 4, 6)
    assert torch.load(tmp_path / "w2" / "last.ckpt", weights_only=False)["global_step"] == 6


@pytest.mark.parametrize("argv, message", [
    (["--devices", "0"], "--devices"),
    (["--strategy", "bogus"], "unknown strategy"),
    (["--accelerator", "bogus"], "unknown accelerator"),
    (["--checkpoint-every", "0"], "checkpoint-every"),
])
def test_bad_trainer_options_are_one_line(tmp_path, capsys, argv, message):
    from cachepilot.cli import main

    assert main(["train", "predictors", "--data", str(tmp_path / "none"), "--work-dir", str(tmp_path / "w")]
                + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_fine_tuning_starts_from_the_given_head(collection, tmp_path):
    from cachepilot.checkpoints import DEFAULT_PREDICTOR

    config = PredictorConfig(max_steps=2, batch_size=8, val_every=2, lr=0.0)  # no update: the start is what is saved
    train_predictors(collection, tmp_path / "head", tmp_path / "work", config, progress=False, accelerator="cpu",
                     init=DEFAULT_PREDICTOR)
    tuned, start = Learned.from_pretrained(tmp_path / "head"), Learned.from_pretrained(DEFAULT_PREDICTOR)
    for name, value in start.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[name], value), name


def test_collections_at_several_step_counts_train_one_head(collection, tmp_path_factory, tmp_path, pipe):
    other = tmp_path_factory.mktemp("collect6")
    collect(pipe, other, CollectConfig(samples_per_policy=10, steps=6, policies=["always"], num_shards=1,
                                       batch_size=10), progress=False)
    config = PredictorConfig(max_steps=40, batch_size=8, val_every=20, lr=3e-3)
    data = PredictorDataModule([collection, other], config)
    data.setup()
    assert [g.steps for g in data.groups] == [6, 10]
    items = [data._dataset(lambda g: g.train_rows, seed=0)[i] for i in (0, len(data.groups[0].train_rows))]
    # one batch holds both counts: padded to the longest, each item with its own step count (the head's time scale)
    assert {tuple(item["mask"].shape) for item in items} == {(9,)}
    assert [item["num_steps"][0].item() for item in items] == [6.0, 10.0] and items[0]["mask"][5:].sum() == 0
    batch = next(iter(data.val_dataloader()[0]))
    flat = PredictorModule._flat(batch)
    module = PredictorModule(128, 6, config)
    # per-row step counts: each row's forecast is the one at its own count
    with torch.no_grad():
        module.model.mix[-1].bias.data.normal_()  # a non-trivial head: time features matter
        per_row = module._forecast(flat)
        rows = flat["num_steps"] == 10
        alone = module.model(flat["residuals"].transpose(0, 1)[:, rows], flat["steps"].T[:, rows], flat["count"][rows],
                             flat["step"][rows], 10, flat["hidden"][rows], flat["hidden_at_compute"][rows])
    torch.testing.assert_close(per_row[rows], alone)
    train_predictors([collection, other], tmp_path / "head", tmp_path / "work", config, progress=False,
                     accelerator="cpu")
    assert Learned.from_pretrained(tmp_path / "head").fingerprint["num_steps_trained"] == [6, 10]


def test_training_stops_when_validation_stops_improving_and_keeps_the_best_head(collection, tmp_path, monkeypatch):
    """A validation loss scripted 3, 1, 2, 4, 5, ...: best at the 2nd validation, and with a patience of 2 no
    improvement for the 3rd and 4th, so training stops there (step 16 of 40) and the head saved is the one of
    step 8 (best.ckpt), not the last."""
    scripted = iter([3.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.log("val/loss", next(scripted))

    monkeypatch.setattr(PredictorModule, "on_validation_epoch_end", on_validation_epoch_end)
    config = PredictorConfig(max_steps=40, batch_size=8, val_every=4, lr=3e-3, patience=2, checkpoint_every=4)
    module = train_predictors(collection, tmp_path / "head", tmp_path / "work", config, progress=False,
                              accelerator="cpu")
    assert module.trainer.global_step == 16
    best = torch.load(tmp_path / "work" / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "work" / "last.ckpt", weights_only=True)
    assert best["global_step"] == 8 and last["global_step"] == 16
    head = Learned.from_pretrained(tmp_path / "head").model.state_dict()
    for name, value in head.items():
        assert torch.equal(value, best["state_dict"][f"model.{name}"]), name
    assert any(not torch.equal(value, last["state_dict"][f"model.{name}"]) for name, value in head.items())


def test_validation_loss_is_the_heads_error_relative_to_taylor_one(collection, tmp_path):
    """An untrained head is Taylor-1 (see above): its `val/loss` is 1 at every interval."""
    config = PredictorConfig(max_steps=1, batch_size=8, val_every=1, lr=0.0)
    module = train_predictors(collection, None, tmp_path / "work", config, progress=False, accelerator="cpu")
    assert module.trainer.callback_metrics["val/loss"].item() == pytest.approx(1.0, abs=1e-4)
