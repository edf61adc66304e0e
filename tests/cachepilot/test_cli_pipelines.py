"""The CLI on a user's pipeline: tiny random diffusers pipelines saved offline, named with --pipeline."""

import json

import pytest
from PIL import Image

from cachepilot.cli import main

from ..tiny_pipelines import build_tiny_pipeline, call_kwargs

PROMPTS = ["a red circle", "a blue square", "a small green star", "a big yellow ring", "a black cross",
           "a white dot", "an orange triangle", "a purple line"]


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    kwargs = {k: v for k, v in call_kwargs("sd3").items()}
    return build_tiny_pipeline("sd3", root / "pipe"), prompts, json.dumps(kwargs)


def test_generate_on_a_text_pipeline_writes_an_rgb_grid(sd3, tmp_path, capsys):
    pipe, prompts, kwargs = sd3
    out = tmp_path / "grid.png"
    assert main(["generate", "--pipeline", str(pipe), "--prompts", str(prompts), "--call-kwargs", kwargs,
                 "--steps", "4", "--policy", "fixed:2", "--out", str(out)]) == 0
    assert "compute fraction 0.50" in capsys.readouterr().out
    grid = Image.open(out)
    assert grid.mode == "RGB" and grid.width > grid.height


def test_bench_on_a_text_pipeline_leaves_out_peers_that_cannot_run(sd3, tmp_path):
    pipe, prompts, kwargs = sd3
    with pytest.warns(UserWarning, match="diffusers-fbcache does not run"):
        code = main(["bench", "--pipeline", str(pipe), "--prompts", str(prompts), "--call-kwargs", kwargs,
                     "--steps", "4", "--samples", "2", "--batch-size", "2", "--repeats", "1",
                     "--methods", "always", "fixed+taylor1", "diffusers-fbcache", "--out", str(tmp_path / "b")])
    assert code == 0
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {r["method"] for r in rows} == {"full", "always", "fixed+taylor1"}
    assert all("class_acc" not in r for r in rows)  # the digits classifier only judges digits


def test_collect_under_torchrun_writes_its_rank_shards(sd3, tmp_path, monkeypatch, capsys):
    pipe, prompts, kwargs = sd3
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "collect"
    assert main(["collect", "--pipeline", str(pipe), "--prompts", str(prompts), "--call-kwargs", kwargs,
                 "--steps", "3", "--samples", "2", "--policies", "always", "fixed:2", "--num-shards", "4",
                 "--batch-size", "1", "--out", str(out)]) == 0
    written = sorted(p.name for p in (out / "shards").iterdir())
    assert written == ["shard-00001-of-00004", "shard-00003-of-00004"]


def test_train_policy_on_a_pipeline_needs_an_output(sd3, capsys):
    pipe, prompts, _ = sd3
    assert main(["train", "policy", "--pipeline", str(pipe), "--prompts", str(prompts)]) == 2
    assert "--out is required" in capsys.readouterr().err
