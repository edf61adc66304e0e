import torch

from cachepilot.embedded.digits.loading import load_pipeline
from cachepilot.embedded.digits.train_backbone import BackboneConfig, BackboneModule, train_backbone
from cachepilot.embedded.digits.data import load_digits_split

# ema_decay 0.9: the default 0.999 would average a 60-step run back to the initial weights
TINY = dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, batch_size=64, warmup_steps=5, lr=2e-3,
            ema_decay=0.9)


def _fixed_batch_loss(module: BackboneModule) -> float:
    split = load_digits_split()
    torch.manual_seed(0)
    with torch.no_grad():
        return module.diffusion_loss(split.train_images[:256], split.train_labels[:256]).item()


def test_training_loss_falls_and_export_loads(tmp_path):
    config = BackboneConfig(max_steps=60, **TINY)
    before = _fixed_batch_loss(BackboneModule(config))  # same seed -> same initial weights as the run
    module = train_backbone(config, tmp_path / "work", tmp_path / "pipe", progress=False, accelerator="cpu")
    after = _fixed_batch_loss(module)
    assert after < 0.8 * before
    pipe = load_pipeline(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.num_layers == 2
    assert pipe([0, 1], num_inference_steps=2, output_type="pt").images.shape == (2, 1, 8, 8)


def test_resume_continues_from_last_checkpoint(tmp_path):
    work = tmp_path / "work"
    train_backbone(BackboneConfig(max_steps=10, **TINY), work, None, checkpoint_every=5, progress=False,
                   accelerator="cpu")
    assert (work / "last.ckpt").exists()
    first = torch.load(work / "last.ckpt", weights_only=False)["global_step"]
    train_backbone(BackboneConfig(max_steps=16, **TINY), work, None, resume=True, checkpoint_every=4,
                   progress=False, accelerator="cpu")
    resumed = torch.load(work / "last.ckpt", weights_only=False)
    assert first == 10 and resumed["global_step"] == 16


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train_backbone(BackboneConfig(max_steps=2, **TINY), tmp_path, None, resume=True, progress=False)


def test_label_dropout_is_disabled_in_every_block():
    from diffusers.models.embeddings import LabelEmbedding

    module = BackboneModule(BackboneConfig(**TINY))
    drops = [m.dropout_prob for m in module.transformer.modules() if isinstance(m, LabelEmbedding)]
    assert len(drops) == TINY["num_layers"] and all(p == 0 for p in drops)


def test_a_batch_larger_than_the_data_is_refused_before_training(tmp_path):
    import pytest

    from cachepilot.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no optimisation step"):
        train_backbone(BackboneConfig(max_steps=2, **{**TINY, "batch_size": 100_000}), tmp_path / "w",
                       tmp_path / "out", progress=False, accelerator="cpu")
    assert not (tmp_path / "out").exists()


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    import os

    import pytest

    from cachepilot.train.checkpoints import resume_checkpoint

    work = tmp_path / "work"
    train_backbone(BackboneConfig(max_steps=6, **TINY), work, None, checkpoint_every=3, progress=False,
                   accelerator="cpu")
    previous = [p for p in work.glob("*.ckpt") if p.name != "last.ckpt"]
    assert previous
    last = work / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while writing
    os.utime(last)  # newest
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        assert resume_checkpoint(work) == previous[0]
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        train_backbone(BackboneConfig(max_steps=8, **TINY), work, None, resume=True, checkpoint_every=4,
                       progress=False, accelerator="cpu")
    assert torch.load(work / "last.ckpt", weights_only=False)["global_step"] == 8
