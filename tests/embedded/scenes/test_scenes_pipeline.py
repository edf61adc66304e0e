"""The scenes' FluxPipeline (issue 11): building, sampling, training steps, saving / loading. Tiny sizes, 1 thread."""

from __future__ import annotations

import pytest
import torch

from cachepilot.embedded.scenes import pipeline as sp
from cachepilot.embedded.scenes import train as st
from cachepilot.embedded.scenes.data import sample_scenes

CFG = sp.TINY_CONFIG


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random pipeline saved in float32 (exact round trip) and its directory."""
    torch.set_num_threads(1)
    pipe = sp.build_scenes_flux(CFG, seed=0)
    path = tmp_path_factory.mktemp("scenes-flux")
    st.export_pipeline(pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.transformer, path, CFG, fp16=False)
    return pipe, path


def _images(pipe, prompts, scale=1.0, steps=2, seed=0):
    return st.generate(pipe, prompts, true_cfg_scale=scale, steps=steps, seed=seed)


def test_build_is_unmodified_flux_and_samples_finite_images():
    from diffusers import FluxPipeline, FluxTransformer2DModel

    pipe = sp.build_scenes_flux(CFG)
    assert type(pipe) is FluxPipeline and type(pipe.transformer) is FluxTransformer2DModel
    assert pipe.vae_scale_factor == 4 and pipe.tokenizer_max_length == 16
    assert not pipe.transformer.config.guidance_embeds
    for scale in (1.0, 3.0):
        images = _images(pipe, ["a red circle", "a large blue square above a small yellow cross"], scale)
        assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1


def test_unknown_words_empty_and_long_prompts_do_not_crash():
    pipe = sp.build_scenes_flux(CFG)
    prompts = ["a zebra riding a bicycle!", "", "a red circle " * 20]
    images = _images(pipe, prompts, scale=2.0)
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()


def test_training_conventions_match_the_pipeline():
    """The packed latents / ids / timestep the trainer feeds are those FluxPipeline builds."""
    pipe = sp.build_scenes_flux(CFG)
    latents = torch.randn(2, 4, 8, 8)
    assert torch.equal(sp.pack(latents), pipe._pack_latents(latents, 2, 4, 8, 8))
    ids = sp.tokenize(pipe.tokenizer_2, ["a red circle", ""])
    embeds, pooled, text_ids = pipe.encode_prompt(["a red circle", ""], device="cpu", max_sequence_length=16)
    mine_embeds, mine_pooled = sp.encode_text(pipe.text_encoder, pipe.text_encoder_2, ids)
    assert torch.allclose(embeds, mine_embeds) and torch.allclose(pooled, mine_pooled)
    assert torch.equal(text_ids, sp.text_ids())
    _, image_ids = pipe.prepare_latents(1, 4, 32, 32, torch.float32, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(image_ids, sp.image_ids())


def _assert_training_lowers(loss, params) -> None:
    """15 Adam steps on `params` lower `loss()` (the part learns at all)."""
    opt = torch.optim.Adam(params, lr=2e-3)
    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        assert float(loss()) < before


def test_vae_steps_lower_its_loss():
    torch.manual_seed(0)
    vae = sp.build_vae(CFG)
    images, _, _ = sample_scenes(16, 0)
    _assert_training_lowers(lambda: st.vae_loss(vae, images, torch.Generator().manual_seed(1)), vae.parameters())


def test_vae_training_sets_scaling_factor():
    vae, losses, info = st.train_vae(CFG, steps=2, batch_size=4, progress=False)
    assert len(losses) == 2 and info["latent_std"] > 0
    assert vae.config.scaling_factor == pytest.approx(1 / info["latent_std"]) and vae.config.shift_factor == 0
    bank = st.build_latent_bank(vae, 8, chunk=4, progress=False)
    assert bank["latents"].shape == (8, 4, 8, 8) and bank["ids"].shape == (8, 16)


def test_transformer_steps_lower_flow_matching_loss():
    pipe = sp.build_scenes_flux(CFG)
    torch.manual_seed(0)
    latents = torch.randn(16, 4, 8, 8)
    _, captions, _ = sample_scenes(16, 0)
    ids = sp.tokenize(pipe.tokenizer, captions)
    empty = sp.tokenize(pipe.tokenizer, [""])[0]
    modules = (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2)
    _assert_training_lowers(
        lambda: st.flow_matching_loss(*modules, latents, ids, empty, torch.Generator().manual_seed(1)),
        [p for m in modules for p in m.parameters()])


def test_lightning_training_checkpoints_and_resumes(tmp_path):
    bank = {"latents": torch.randn(32, 4, 8, 8), "ids": sp.tokenize(sp.build_tokenizer(), sample_scenes(32, 0)[1])}
    module, _ = st.train_transformer(bank, tmp_path, CFG, steps=2, batch_size=8, progress=False)
    assert module.trained_steps == 2 and (tmp_path / "last.ckpt").is_file()
    module, _ = st.train_transformer(bank, tmp_path, CFG, steps=3, batch_size=8, progress=False, resume=True)
    assert module.trained_steps == 3
    with pytest.raises(FileNotFoundError):
        st.train_transformer(bank, tmp_path / "none", CFG, steps=1, batch_size=8, progress=False, resume=True)


def test_decay_spans_this_run_even_when_resumed():
    """The cosine decay starts where a (resumed) run starts and reaches 10 % at its last step."""
    factor = st.learning_rate_factor(warmup=10, max_steps=100)
    assert factor(0) == pytest.approx(0.1)  # warm-up
    assert [round(factor(i), 2) for i in range(1, 4)] == [0.2, 0.3, 0.4]
    resumed = st.learning_rate_factor(warmup=10, max_steps=100)
    resumed(0)  # Lightning builds the scheduler at step 0, then loads the resumed step
    values = {step: resumed(step) for step in range(60, 101)}  # the steps then follow one by one
    assert values[60] == pytest.approx(1.0)  # the jump restarted the decay at the resumed step
    assert values[80] == pytest.approx(0.55)  # half-way: 0.1 + 0.9 x 0.5
    assert values[100] == pytest.approx(0.1)


def test_a_grown_latent_bank_equals_one_built_at_once():
    vae = sp.build_vae(CFG).eval()
    whole = st.build_latent_bank(vae, 8, chunk=4, progress=False)
    first = st.build_latent_bank(vae, 4, chunk=4, progress=False)
    rest = st.build_latent_bank(vae, 8, chunk=4, progress=False, start=4)
    assert torch.equal(torch.cat([first["ids"], rest["ids"]]), whole["ids"])
    torch.testing.assert_close(torch.cat([first["latents"], rest["latents"]]), whole["latents"])
    with pytest.raises(ValueError, match="multiple of chunk"):
        st.build_latent_bank(vae, 8, chunk=4, progress=False, start=3)


def test_rendering_workers_and_a_short_last_chunk_give_the_same_bank():
    """Scenes are seeded per chunk, not per process: 2 rendering workers give the in-process bank, and a size
    that is no multiple of the chunk ends with the first scenes of the next chunk's seed."""
    vae = sp.build_vae(CFG).eval()
    alone = st.build_latent_bank(vae, 8, chunk=4, progress=False)
    workers = st.build_latent_bank(vae, 8, chunk=4, progress=False, workers=2)
    assert torch.equal(workers["ids"], alone["ids"])
    torch.testing.assert_close(workers["latents"], alone["latents"])
    short = st.build_latent_bank(vae, 6, chunk=4, progress=False)
    assert short["ids"].shape == (6, 16) and torch.equal(short["ids"], alone["ids"][:6])


def test_frozen_text_encoders_are_left_out_of_the_optimiser():
    """--freeze-text-encoders: the encoders get no gradient and the optimiser holds the transformer alone
    (the EMA swap at the end of a short run would hide a weight comparison)."""
    frozen = st._lightning_module()(CFG.to_dict(), freeze_text=True)
    joint = st._lightning_module()(CFG.to_dict())
    count = lambda module: sum(p.numel() for g in module.configure_optimizers()["optimizer"].param_groups
                               for p in g["params"])
    assert count(frozen) == sum(p.numel() for p in frozen.transformer.parameters())
    assert count(joint) == sum(p.numel() for p in joint.parameters())
    assert not any(p.requires_grad for p in frozen.text_encoder.parameters())
    assert not any(p.requires_grad for p in frozen.text_encoder_2.parameters())


def test_saved_pipeline_round_trips(saved):
    from diffusers import DiffusionPipeline, FluxPipeline

    pipe, path = saved
    loaded = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    assert type(loaded) is FluxPipeline
    loaded.set_progress_bar_config(disable=True)
    prompts = ["a red circle left of a green square", ""]
    diff = (_images(pipe, prompts, 2.0) - _images(loaded, prompts, 2.0)).abs().max()
    assert diff < 1e-4, diff


def test_fp16_storage_loads_as_float32(tmp_path):
    pipe = sp.build_scenes_flux(CFG)
    st.export_pipeline(pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.transformer, tmp_path, CFG)
    loaded = st.load_scenes_flux(tmp_path)
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        assert getattr(loaded, name).dtype == torch.float32
    assert torch.isfinite(_images(loaded, ["a white cross"])).all()


def test_cachepilot_load_pipeline_accepts_it(saved):
    from diffusers import FluxPipeline

    from cachepilot.loading import load_pipeline

    _, path = saved
    pipe = load_pipeline(path)
    assert type(pipe) is FluxPipeline
