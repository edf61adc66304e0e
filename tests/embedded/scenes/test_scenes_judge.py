import json

import numpy as np
import pytest
import torch

from cachepilot.embedded.scenes.data import NUM_PAIRS, evaluation_prompts, render, sample_scenes
from cachepilot.embedded.scenes.judge import (
    SceneJudge, adherence, attribute_accuracy, check_accuracy, frechet_distance, load_judge, relation_check,
    scenes_quality, shuffled_captions, train_judge,
)
from cachepilot.errors import CheckpointError, InvalidInputError


@pytest.fixture(scope="module")
def judge():
    return load_judge()  # the shipped checkpoints/scenes-judge


@pytest.fixture(scope="module")
def held_out():
    return sample_scenes(64, 2024, split="eval")  # fresh: not the README's evaluation seed


def test_shipped_judge_is_small_and_float32(judge):
    assert sum(p.numel() for p in judge.parameters()) <= 300_000
    assert all(p.dtype == torch.float32 for p in judge.parameters())
    out = judge(torch.rand(2, 3, 32, 32))
    assert out.presence_logits.shape == (2, NUM_PAIRS) and out.centres.shape == (2, NUM_PAIRS, 2)
    assert judge.features(torch.rand(2, 3, 32, 32)).shape == (2, judge.num_features)


def test_adherence_discriminates_true_from_shuffled_captions(judge, held_out):
    images, captions, scenes = held_out
    true = adherence(judge, images, captions)
    assert true.shape == (64,) and true.min() >= 0 and true.max() <= 1
    assert true.mean() >= 0.9
    assert torch.allclose(adherence(judge, images, scenes), true)  # Scenes and captions agree
    shuffled = adherence(judge, images, shuffled_captions(captions, seed=1))
    assert shuffled.mean() < true.mean() - 0.4
    assert attribute_accuracy(judge, images, captions) >= 0.9
    per_kind = check_accuracy(judge, images, captions)
    assert set(per_kind) == {"presence", "size", "relation", "all"} and per_kind["relation"] >= 0.85


def test_adherence_reads_relations_and_sizes(judge):
    captions, scenes = evaluation_prompts(16, seed=3, num_objects=2)
    images = render(scenes)
    swapped = [c.replace("above", "X").replace("below", "above").replace("X", "below")
                .replace("left", "X").replace("right", "left").replace("X", "right") for c in captions]
    resized = [c.replace("small", "X").replace("large", "small").replace("X", "large") for c in captions]
    true = adherence(judge, images, captions).mean()
    assert adherence(judge, images, swapped).mean() < true - 0.2
    assert adherence(judge, images, resized).mean() < true
    assert relation_check((0.5, 0.2), (0.5, 0.8), "above") and not relation_check((0.5, 0.2), (0.5, 0.8), "below")


def test_bad_input_to_adherence(judge, held_out):
    images, captions, _ = held_out
    with pytest.raises(InvalidInputError, match="64 images but 3"):
        adherence(judge, images, captions[:3])
    with pytest.raises(InvalidInputError, match="vocabulary"):
        adherence(judge, images[:1], ["a red dog"])
    with pytest.raises(InvalidInputError, match="shape"):
        adherence(judge, images[:, :1], captions)


def test_frechet_distance_is_finite_and_refuses_nan(judge, held_out):
    images = held_out[0]
    other = sample_scenes(64, 99, split="eval")[0]
    same = frechet_distance(judge, images, other)
    noise = frechet_distance(judge, torch.rand(64, 3, 32, 32), other)
    assert np.isfinite(same) and np.isfinite(noise) and noise > 3 * same
    bad = images.clone()
    bad[3, 0, 5, 5] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        frechet_distance(judge, bad, other)
    with pytest.raises(InvalidInputError, match="NaN"):
        frechet_distance(judge, images, torch.full_like(other, float("inf")))
    with pytest.raises(InvalidInputError, match="at least 2"):
        frechet_distance(judge, images[:1], other)
    quality = scenes_quality(judge, other)(images, [{"prompt": c} for c in held_out[1]])
    assert set(quality) == {"adherence", "attr_acc", "fd"} and quality["adherence"] >= 0.9


def test_a_few_steps_lower_the_loss_and_save(tmp_path):
    judge, losses = train_judge(tmp_path / "judge", steps=24, batch_size=32, seed=0, progress=False)
    assert len(losses) == 24 and np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4])
    loaded = load_judge(tmp_path / "judge")
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(loaded(x).presence_logits, judge(x).presence_logits, atol=0.05)  # float16 storage
    assert next(judge.parameters()).dtype == torch.float32  # saving left the trained judge alone
    with pytest.raises(InvalidInputError):
        train_judge(None, steps=0)


def test_load_judge_errors(tmp_path, judge):
    with pytest.raises(CheckpointError, match="not found"):
        load_judge(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="directory"):
        load_judge(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_judge(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_judge(empty)
    (empty / "config.json").write_text(json.dumps({"_class_name": "DigitsClassifier"}))
    with pytest.raises(CheckpointError, match="expected a SceneJudge"):
        load_judge(empty)
    good = tmp_path / "good"
    SceneJudge().save_pretrained(good)
    config = json.loads((good / "config.json").read_text())
    (good / "config.json").write_text(json.dumps(config | {"colours": ["red", "green"]}))
    with pytest.raises(CheckpointError, match="colours"):
        load_judge(good)
    (good / "config.json").write_text(json.dumps(config))
    (good / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_judge(good)
    (good / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_judge(good)
