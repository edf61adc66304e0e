import json
import shutil

import pytest
from diffusers import PixArtTransformer2DModel

from cachepilot import CheckpointError
from cachepilot.checkpoints import DEFAULT_CLASSIFIER, DEFAULT_PIPELINE
from cachepilot.embedded.digits.loading import load_classifier, load_pipeline


@pytest.fixture
def checkpoint_copy(tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_PIPELINE, target)
    return target


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pipeline(tmp_path / "nope")


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "f.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="must be a directory"):
        load_pipeline(f)


def test_directory_without_model_index(tmp_path):
    with pytest.raises(CheckpointError, match="model_index.json is missing"):
        load_pipeline(tmp_path)


def test_corrupt_safetensors(checkpoint_copy):
    weights = checkpoint_copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pipeline(checkpoint_copy)


def test_corrupt_config_json(checkpoint_copy):
    (checkpoint_copy / "transformer" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pipeline(checkpoint_copy)


def test_checkpoint_of_another_model_class(checkpoint_copy):
    shutil.rmtree(checkpoint_copy / "transformer")
    PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=1, sample_size=8,
        cross_attention_dim=16, caption_channels=8,
    ).save_pretrained(checkpoint_copy / "transformer")
    index = json.loads((checkpoint_copy / "model_index.json").read_text())
    index["transformer"] = ["diffusers", "PixArtTransformer2DModel"]
    (checkpoint_copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="PixArtTransformer2DModel.*expected a DiTTransformer2DModel"):
        load_pipeline(checkpoint_copy)


def test_classifier_loads_and_refuses_a_pipeline_directory():
    assert load_classifier().num_features > 0
    with pytest.raises(CheckpointError, match="DigitsClassifier"):
        load_classifier(DEFAULT_PIPELINE / "transformer")


def test_classifier_corrupt_weights(tmp_path):
    target = tmp_path / "clf"
    shutil.copytree(DEFAULT_CLASSIFIER, target)
    (target / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_classifier(target)


def _transformer_with_layers(checkpoint_copy, layers):
    config_path = checkpoint_copy / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["num_layers"] = layers
    config_path.write_text(json.dumps(config))


def test_config_with_more_layers_than_weights_is_refused(checkpoint_copy):
    _transformer_with_layers(checkpoint_copy, 7)  # 6 layers of weights: block 7 would be uninitialised
    with pytest.raises(CheckpointError, match="missing.*transformer_blocks.6"):
        load_pipeline(checkpoint_copy)


def test_config_with_fewer_layers_than_weights_is_refused(checkpoint_copy):
    _transformer_with_layers(checkpoint_copy, 5)  # a block would be dropped silently
    with pytest.raises(CheckpointError, match="no place for.*transformer_blocks.5"):
        load_pipeline(checkpoint_copy)


def test_generic_loader_is_strict_too(checkpoint_copy):
    from cachepilot.loading import load_pipeline as load_any

    _transformer_with_layers(checkpoint_copy, 7)
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        load_any(checkpoint_copy)


def test_nan_weights_are_refused_naming_the_tensor(checkpoint_copy):
    from safetensors.torch import load_file, save_file

    path = checkpoint_copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(path))
    name = sorted(k for k in weights if "transformer_blocks.3" in k and k.endswith("weight"))[0]
    weights[name][0] = float("nan")
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_pipeline(checkpoint_copy)


@pytest.mark.parametrize("target, content, message", [
    ("transformer/config.json", "[1, 2]", "must hold a JSON object"),
    ("model_index.json", json.dumps({"_class_name": "DigitsDiTPipeline", "transformer": "DiTTransformer2DModel"}),
     "transformer entry must be"),
    ("model_index.json", "[]", "must hold a JSON object"),
])
def test_malformed_json_is_one_clear_error(checkpoint_copy, target, content, message):
    from cachepilot.loading import load_pipeline as load_any

    (checkpoint_copy / target).write_text(content)
    for loader in (load_pipeline, load_any):
        with pytest.raises(CheckpointError, match=message):
            loader(checkpoint_copy)
