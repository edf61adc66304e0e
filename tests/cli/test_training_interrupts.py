"""Lightning trainers: Ctrl-C saves a resumable checkpoint and exits 130 in one line; a resume with other settings,
a pickled checkpoint or an unfinished collection shard is refused in one line."""

import shutil
import warnings

import pytest
import torch

from cachepilot.cli import main
from cachepilot.errors import InvalidInputError
from cachepilot.embedded.digits.train_backbone import BackboneConfig, BackboneModule, train_backbone
from cachepilot.train.collect import CollectConfig, collect
from cachepilot.errors import Interrupted
from cachepilot.train.predictors import PredictorConfig, PredictorModule, train_predictors

TINY = dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, batch_size=64, warmup_steps=2)


def _interrupt_at(monkeypatch, module_class, step: int) -> None:
    original = module_class.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(module_class, "training_step", training_step)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, pipe):
    out = tmp_path_factory.mktemp("collect")
    collect(pipe, out, CollectConfig(samples_per_policy=10, steps=6, policies=["always"], num_shards=1, batch_size=10),
            progress=False)
    return out


def test_ctrl_c_in_train_predictors_saves_a_checkpoint_that_resumes(collection, tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    _interrupt_at(monkeypatch, PredictorModule, 3)
    argv = ["train", "predictors", "--data", str(collection), "--batch-size", "4", "--train-steps", "6",
            "--out", str(tmp_path / "head"), "--work-dir", str(work), "--accelerator", "cpu"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 3" in err and "--resume" in err and "Traceback" not in err
    assert torch.load(work / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not (tmp_path / "head").exists()
    monkeypatch.undo()
    assert main(argv + ["--resume"]) == 0
    assert torch.load(work / "last.ckpt", weights_only=True)["global_step"] == 6 and (tmp_path / "head").is_dir()


def test_ctrl_c_in_train_backbone_saves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    work = tmp_path / "w"
    _interrupt_at(monkeypatch, BackboneModule, 2)
    with pytest.raises(Interrupted, match="--resume") as info:
        train_backbone(BackboneConfig(max_steps=4, **TINY), work, None, progress=False, accelerator="cpu")
    assert info.value.exit_code == 130
    assert torch.load(work / "last.ckpt", weights_only=True)["global_step"] == 2
    monkeypatch.undo()
    train_backbone(BackboneConfig(max_steps=4, **TINY), work, None, resume=True, progress=False, accelerator="cpu")
    assert torch.load(work / "last.ckpt", weights_only=True)["global_step"] == 4


def test_backbone_resume_with_other_layers_names_the_setting(tmp_path):
    work = tmp_path / "w"
    train_backbone(BackboneConfig(max_steps=1, **TINY), work, None, progress=False, accelerator="cpu")
    with pytest.raises(InvalidInputError, match="trained with --layers 1, this run asks for 2"):
        train_backbone(BackboneConfig(max_steps=2, **{**TINY, "num_layers": 2}), work, None, resume=True,
                       progress=False, accelerator="cpu")


def test_a_pickled_checkpoint_is_refused_on_resume(collection, tmp_path, capsys):
    from pathlib import PurePosixPath

    work = tmp_path / "w"
    work.mkdir()
    torch.save({"global_step": 1, "payload": PurePosixPath("not/a/tensor")}, work / "last.ckpt")
    assert main(["train", "predictors", "--data", str(collection), "--batch-size", "4", "--train-steps", "2",
                 "--out", str(tmp_path / "head"), "--work-dir", str(work), "--accelerator", "cpu", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds objects that are not tensors" in err and "Traceback" not in err


def test_an_unfinished_shard_is_refused_with_its_rows(collection, tmp_path):
    partial = tmp_path / "c"
    shutil.copytree(collection, partial)
    shard = next((partial / "shards").iterdir())
    shard.rename(shard.with_name(shard.name + ".partial"))
    with pytest.raises(Exception, match=r"unfinished \(10 rows"):
        train_predictors(partial, None, tmp_path / "w", PredictorConfig(max_steps=1, batch_size=4), progress=False,
                         accelerator="cpu")


def test_a_fresh_run_warns_nothing_about_its_work_dir(collection, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_predictors(collection, None, tmp_path / "w", PredictorConfig(max_steps=2, batch_size=4, val_every=2),
                         progress=False, accelerator="cpu")
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]


def test_the_progress_bar_counts_epochs_without_a_bogus_total(collection, tmp_path, capsys):
    train_predictors(collection, None, tmp_path / "w", PredictorConfig(max_steps=2, batch_size=4, val_every=2),
                     progress=True, accelerator="cpu")
    printed = capsys.readouterr()
    assert "Epoch 0" in printed.out + printed.err and "/-2" not in printed.out + printed.err


def test_a_head_resumed_after_an_interruption_equals_the_uninterrupted_one(collection, tmp_path, monkeypatch):
    config = PredictorConfig(max_steps=6, batch_size=8, val_every=100, lr=3e-3)  # 18 train rows: 2 batches an epoch
    whole = train_predictors(collection, None, tmp_path / "a", config, progress=False, accelerator="cpu")
    _interrupt_at(monkeypatch, PredictorModule, 3)  # mid-epoch (epoch 1, its second batch)
    with pytest.raises(Interrupted):
        train_predictors(collection, None, tmp_path / "b", config, progress=False, accelerator="cpu")
    monkeypatch.undo()
    resumed = train_predictors(collection, None, tmp_path / "b", config, resume=True, progress=False,
                               accelerator="cpu")
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, atol=0, rtol=0, msg=name)
