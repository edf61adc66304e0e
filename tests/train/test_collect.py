import json

import numpy as np

import pytest
import torch
from diffusers import DiTTransformer2DModel

from cachepilot import CachepilotError, CheckpointError, InvalidInputError
from cachepilot.train.collect import CollectConfig, as_tensors, collect, load_collection, shard_dir

TINY = dict(samples_per_policy=4, steps=6, policies=["always", "fixed:2"], num_shards=2, batch_size=2)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, pipe):
    out = tmp_path_factory.mktemp("collect")
    collect(pipe, out, CollectConfig(**TINY), progress=False)
    return out


def test_collection_holds_inputs_and_true_residuals(collection, pipe):
    dataset = load_collection(collection, pipe.transformer)
    assert len(dataset) == 8 and sorted(set(dataset["policy"])) == ["always", "fixed:2"]
    hidden, residual = as_tensors(dataset)
    assert hidden.shape == (8, 6, 16, 128) and hidden.dtype == torch.float16
    policies = dataset.with_format(None)["policy"]
    samples = dataset.with_format(None)["sample"]
    full = {s: i for i, (s, p) in enumerate(zip(samples, policies)) if p == "always"}
    cached = {s: i for i, (s, p) in enumerate(zip(samples, policies)) if p == "fixed:2"}
    sample = next(iter(full))
    # same seed: identical until the first skipped step has moved the latents, different after
    assert torch.equal(hidden[full[sample], :2], hidden[cached[sample], :2])
    assert not torch.equal(hidden[full[sample], 3:], hidden[cached[sample], 3:])
    assert residual.abs().sum() > 0 and torch.isfinite(residual.float()).all()


def test_step_weights_are_measured_and_normalised(collection):
    weights = torch.tensor(json.loads((collection / "step_weights.json").read_text()))
    assert weights.shape == (6,) and weights.mean().item() == pytest.approx(1.0) and (weights > 0).all()


def test_finished_shards_are_skipped_and_missing_ones_resumed(collection, pipe):
    config = CollectConfig(**TINY)
    first = shard_dir(collection, 0, 2)
    stamp = (first / "dataset_info.json").stat().st_mtime_ns
    # simulate an interruption: shard 1 lost, only a partial directory left
    import shutil
    shutil.rmtree(shard_dir(collection, 1, 2))
    shard_dir(collection, 1, 2).with_name(shard_dir(collection, 1, 2).name + ".partial").mkdir()
    collect(pipe, collection, config, progress=False)
    assert (first / "dataset_info.json").stat().st_mtime_ns == stamp  # not recomputed
    assert len(load_collection(collection)) == 8


def test_other_settings_or_backbone_are_refused(collection, pipe, tmp_path):
    with pytest.raises(InvalidInputError, match="other settings"):
        collect(pipe, collection, CollectConfig(**{**TINY, "steps": 7}), progress=False)
    other = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                  num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    with pytest.raises(CheckpointError, match="another backbone: hidden_size"):
        load_collection(collection, other)


def test_empty_or_missing_collection(tmp_path, pipe):
    with pytest.raises(CheckpointError, match="no collection"):
        load_collection(tmp_path)
    collect(pipe, tmp_path, CollectConfig(**TINY), shards=[], progress=False)
    with pytest.raises(CachepilotError, match="empty"):
        load_collection(tmp_path)


def test_a_truncated_shard_is_a_clear_error(collection, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(collection, copy)
    arrow = sorted((copy / "shards").glob("shard-*/*.arrow"))[0]
    data = arrow.read_bytes()
    arrow.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_collection(copy)


def test_true_cfg_calls_are_collected_as_cfg_copies(tmp_path):
    """Flux true CFG calls its transformer twice per step ("cond", "uncond"): each step's two calls become the
    batch's two CFG copies, with true residuals."""
    from cachepilot.loading import load_pipeline

    from ..tiny_pipelines import build_tiny_pipeline, call_kwargs

    pipe = load_pipeline(build_tiny_pipeline("flux", tmp_path / "flux"))
    kwargs = {**call_kwargs("flux"), "negative_prompt": "", "true_cfg_scale": 2.0}
    config = CollectConfig(samples_per_policy=2, steps=3, call_kwargs=kwargs, policies=["always", "fixed:2"],
                           conditions=[{"prompt": "a red circle"}, {"prompt": "a blue square"}], num_shards=1,
                           batch_size=2)
    collect(pipe, tmp_path / "data", config, progress=False)
    data = load_collection(tmp_path / "data")
    assert len(data) == 2 * 2 * 2  # policies x samples x contexts
    assert sorted({int(c) for c in data["cfg_copy"]}) == [0, 1]
    hidden = torch.as_tensor(np.asarray(data[0]["hidden"], dtype=np.float32))
    assert hidden.shape[0] == 3 and torch.isfinite(hidden).all()


def test_a_second_collection_reuses_the_step_weights_of_the_first(collection, pipe, tmp_path):
    """Same pipeline, steps, call kwargs and conditions: the weights a recomputation gives are the first
    collection's byte for byte, so they are copied, and the collection spends exactly their cost less; any
    setting that differs computes them."""
    from cachepilot.bench.counting import StackCounter
    from cachepilot.train.collect import WEIGHTS_FILE, collection_meta, reuse_step_weights
    from cachepilot.train.sensitivity import SENSITIVITY_SAMPLES

    conditions = collection_meta(collection)["collect"]["conditions"]
    dagger = CollectConfig(**{**TINY, "policies": ["fixed:2"], "predictor": "taylor:2", "num_shards": 1,
                              "conditions": conditions})
    spent = {}
    for name, reuse in (("computed", False), ("reused", True)):
        if reuse:
            assert reuse_step_weights(collection, tmp_path / name, dagger, pipe)
        with StackCounter(pipe.transformer) as counter:
            collect(pipe, tmp_path / name, dagger, progress=False)
        spent[name] = counter.evaluations
    first = (collection / WEIGHTS_FILE).read_bytes()
    assert (tmp_path / "computed" / WEIGHTS_FILE).read_bytes() == first  # the premise: recomputed, the same bytes
    assert (tmp_path / "reused" / WEIGHTS_FILE).read_bytes() == first
    copies = spent["reused"] / (4 * (6 + 3))  # fixed:2 alone: 6 bypassed + 3 computed steps a sample
    assert spent["computed"] - spent["reused"] == copies * SENSITIVITY_SAMPLES * 6 * 7
    other = CollectConfig(**{**TINY, "conditions": conditions[:3]})
    assert not reuse_step_weights(collection, tmp_path / "other", other, pipe)  # other conditions: computed
    assert not (tmp_path / "other" / WEIGHTS_FILE).exists()
    assert not reuse_step_weights(collection, tmp_path / "reused", dagger, pipe)  # already there: left alone
