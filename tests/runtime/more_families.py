"""Tiny, perturbed configurations of the families added beside tiny_models.FAMILIES, and the checks run on
every family (shared by tests/runtime/test_more_families.py and experiments/families_table.py, which writes
docs/families.md from them).

Each builder: batch -> (model, initial latents, step function(model, latents, t) -> model output shaped
like the latents). Configs follow diffusers' own model tests; weights are random, then *perturbed*
(`perturb`): several families zero-initialise their modulation or output layers, which makes a block an
identity and a cache test vacuous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

import cachepilot

STEPS = 4

Step = Callable[[torch.nn.Module, torch.Tensor, float], torch.Tensor]


def perturb(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add small noise to every parameter, so no block is an identity (zero-initialised modulation)."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn_like(param))
    return model.eval()


def _sample(out) -> torch.Tensor:
    return out.sample if hasattr(out, "sample") else out[0]


def _flux_ids(n: int, text: int, axes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    side = int(n ** 0.5)
    img = torch.zeros(n, axes)
    img[:, 1], img[:, 2] = torch.arange(n) // side, torch.arange(n) % side
    return img, torch.zeros(text, axes)


def _bria(batch: int, g: torch.Generator):
    from diffusers import BriaTransformer2DModel

    model = BriaTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=2, attention_head_dim=8,
                                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=None,
                                   axes_dims_rope=[0, 4, 4])
    img_ids, txt_ids = _flux_ids(16, 12)
    # 12 text tokens, 16 image tokens: a swapped layout shows in the shapes
    x, context = torch.randn(batch, 16, 4, generator=g), torch.randn(batch, 12, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context, img_ids=img_ids, txt_ids=txt_ids,
                                              timestep=torch.full((batch,), t / 1000)))


def _ovis(batch: int, g: torch.Generator):
    from diffusers import OvisImageTransformer2DModel

    model = OvisImageTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_single_layers=2,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                        axes_dims_rope=(4, 4, 8))
    img_ids, txt_ids = _flux_ids(16, 12)
    x, context = torch.randn(batch, 16, 4, generator=g), torch.randn(batch, 12, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context, img_ids=img_ids, txt_ids=txt_ids,
                                              timestep=torch.full((batch,), t / 1000)))


def _chroma(batch: int, g: torch.Generator):
    from diffusers import ChromaTransformer2DModel

    model = ChromaTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=3,
                                     attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                     axes_dims_rope=[4, 4, 8], approximator_num_channels=8, approximator_hidden_dim=16,
                                     approximator_layers=1)
    img_ids, txt_ids = _flux_ids(16, 12)
    x, context = torch.randn(batch, 16, 4, generator=g), torch.randn(batch, 12, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context, img_ids=img_ids, txt_ids=txt_ids,
                                              timestep=torch.full((batch,), t / 1000)))


def _hidream(batch: int, g: torch.Generator):
    from diffusers import HiDreamImageTransformer2DModel

    model = HiDreamImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                           num_single_layers=2,
                                           attention_head_dim=8, num_attention_heads=4, caption_channels=[8, 4],
                                           text_emb_dim=8, num_routed_experts=2, num_activated_experts=2,
                                           axes_dims_rope=(4, 2, 2), max_resolution=(32, 32), llama_layers=(0, 1, 2),
                                           force_inference_output=True)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    t5, pooled = torch.randn(batch, 6, 8, generator=g), torch.randn(batch, 8, generator=g)
    llama = torch.randn(3, batch, 6, 4, generator=g)  # one text state per Llama layer the blocks read
    return model, x, lambda m, x, t: _sample(m(x, timesteps=torch.full((batch,), int(t)), encoder_hidden_states_t5=t5,
                                              encoder_hidden_states_llama3=llama, pooled_embeds=pooled))


def _hunyuandit(batch: int, g: torch.Generator):
    from diffusers import HunyuanDiT2DModel

    model = HunyuanDiT2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=4, attention_head_dim=8,
                              num_attention_heads=2, cross_attention_dim=8, cross_attention_dim_t5=8,
                              pooled_projection_dim=4, hidden_size=16, text_len=4, text_len_t5=4,
                              activation_fn="gelu-approximate")  # 4 layers: the last takes the first one's output
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context, context_t5 = torch.randn(batch, 4, 8, generator=g), torch.randn(batch, 4, 8, generator=g)
    kwargs = dict(encoder_hidden_states=context, text_embedding_mask=torch.ones(batch, 4),
                  encoder_hidden_states_t5=context_t5, text_embedding_mask_t5=torch.ones(batch, 4),
                  image_meta_size=torch.tensor([[1024.0, 1024, 16, 16, 0, 0]] * batch),
                  style=torch.zeros(batch, dtype=torch.long), image_rotary_emb=(torch.ones(16, 8), torch.zeros(16, 8)))
    return model, x, lambda m, x, t: _sample(m(x, timestep=torch.full((batch,), float(t)), **kwargs))[:, :4]


def _flux2(batch: int, g: torch.Generator):
    from diffusers import Flux2Transformer2DModel

    model = Flux2Transformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=2,
                                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                    timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4])
    h = w = 4
    img_ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(12))
    x, context = torch.randn(batch, h * w, 4, generator=g), torch.randn(batch, 12, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(
        x, encoder_hidden_states=context, img_ids=img_ids[None].expand(batch, -1, -1),
        txt_ids=txt_ids[None].expand(batch, -1, -1), timestep=torch.full((batch,), t / 1000),
        guidance=torch.ones(batch)))


def _auraflow(batch: int, g: torch.Generator):
    from diffusers import AuraFlowTransformer2DModel

    model = AuraFlowTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1,
                                       num_single_dit_layers=2, attention_head_dim=8, num_attention_heads=2,
                                       caption_projection_dim=16, joint_attention_dim=32, out_channels=4,
                                       pos_embed_max_size=64)
    x, context = torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 6, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context,
                                              timestep=torch.full((batch,), t / 1000)))


def _lumina2(batch: int, g: torch.Generator):
    from diffusers import Lumina2Transformer2DModel

    model = Lumina2Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, hidden_size=24, num_layers=2,
                                      num_refiner_layers=1, num_attention_heads=3, num_kv_heads=1, multiple_of=2,
                                      ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0,
                                      axes_dim_rope=(4, 2, 2), axes_lens=(128, 128, 128), cap_feat_dim=32)
    x, context = torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 6, 32, generator=g)
    mask = torch.ones(batch, 6, dtype=torch.bool)
    return model, x, lambda m, x, t: _sample(m(x, timestep=torch.full((batch,), t / 1000),
                                              encoder_hidden_states=context, encoder_attention_mask=mask))


def _zimage(batch: int, g: torch.Generator):
    from diffusers import ZImageTransformer2DModel

    model = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=16, n_layers=2,
                                     n_refiner_layers=1, n_heads=1, n_kv_heads=2, qk_norm=True, cap_feat_dim=16,
                                     rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    x = torch.randn(batch, 4, 1, 8, 8, generator=g)  # (B, C, F, H, W); the model takes per-sample lists
    context = [torch.randn(8, 16, generator=g) for _ in range(batch)]

    def step(m, x, t):
        out = m(list(x), cap_feats=context, t=torch.full((batch,), t / 1000), return_dict=False)[0]
        return torch.stack(out)
    return model, x, step


def _cosmos(batch: int, g: torch.Generator):
    from diffusers import CosmosTransformer3DModel

    model = CosmosTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12,
                                     num_layers=2, mlp_ratio=2, text_embed_dim=16, adaln_lora_dim=4,
                                     max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
                                     concat_padding_mask=False, extra_pos_embed_type="learnable")
    x, context = torch.randn(batch, 4, 1, 8, 8, generator=g), torch.randn(batch, 6, 16, generator=g)
    return model, x, lambda m, x, t: _sample(m(
        x, timestep=torch.full((batch,), t / 1000), encoder_hidden_states=context,
        attention_mask=torch.ones(batch, 6), fps=30))


def _allegro(batch: int, g: torch.Generator):
    from diffusers import AllegroTransformer3DModel

    model = AllegroTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                      num_layers=2, cross_attention_dim=16, sample_width=8, sample_height=8,
                                      sample_frames=8, caption_channels=8)
    x, context = torch.randn(batch, 4, 2, 8, 8, generator=g), torch.randn(batch, 6, 8, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context,
                                              timestep=torch.full((batch,), int(t))))


def _easyanimate(batch: int, g: torch.Generator):
    from diffusers import EasyAnimateTransformer3DModel

    model = EasyAnimateTransformer3DModel(attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=2,
                                          num_layers=2, out_channels=4, patch_size=2, sample_height=60,
                                          sample_width=90, text_embed_dim=16, time_embed_dim=8,
                                          time_position_encoding_type="3d_rope", timestep_activation_fn="silu")
    x, context = torch.randn(batch, 4, 2, 8, 8, generator=g), torch.randn(batch, 6, 16, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, timestep=torch.full((batch,), int(t)),
                                              encoder_hidden_states=context))


def _skyreels(batch: int, g: torch.Generator):
    from diffusers import SkyReelsV2Transformer3DModel

    model = SkyReelsV2Transformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                         in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32,
                                         num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                         rope_max_seq_len=32)
    x, context = torch.randn(batch, 4, 2, 8, 8, generator=g), torch.randn(batch, 6, 16, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context,
                                              timestep=torch.full((batch,), int(t))))


def _sana_video(batch: int, g: torch.Generator):
    from diffusers import SanaVideoTransformer3DModel

    model = SanaVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12,
                                        num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=12,
                                        cross_attention_dim=24, caption_channels=16, mlp_ratio=2.5, dropout=0.0,
                                        attention_bias=False, sample_size=8, patch_size=(1, 2, 2),
                                        norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    x, context = torch.randn(batch, 4, 2, 8, 8, generator=g), torch.randn(batch, 6, 16, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, encoder_hidden_states=context,
                                              timestep=torch.full((batch,), int(t))))


def _prx(batch: int, g: torch.Generator):
    from diffusers import PRXTransformer2DModel

    model = PRXTransformer2DModel(in_channels=4, patch_size=2, context_in_dim=32, hidden_size=32, mlp_ratio=2.0,
                                  num_heads=2, depth=2, axes_dim=[8, 8], theta=10_000)
    x, context = torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 6, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(x, timestep=torch.full((batch,), t / 1000),
                                              encoder_hidden_states=context))


def _omnigen(batch: int, g: torch.Generator):
    from diffusers import OmniGenTransformer2DModel

    model = OmniGenTransformer2DModel(hidden_size=16, num_attention_heads=4, num_key_value_heads=4,
                                      intermediate_size=32, num_layers=2, pad_token_id=0, vocab_size=100,
                                      in_channels=4, time_step_dim=4,
                                      rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]})
    tokens = 6
    seq = tokens + 1 + 16  # text, time token, 4x4 latent patches
    x = torch.randn(batch, 4, 8, 8, generator=g)
    ids = torch.randint(0, 10, (batch, tokens), generator=g)
    return model, x, lambda m, x, t: _sample(m(
        x, timestep=torch.full((batch,), t / 1000), input_ids=ids, input_img_latents=[], input_image_sizes={},
        attention_mask=torch.ones(batch, seq, seq), position_ids=torch.arange(seq)[None].expand(batch, -1)))


def _framepack(batch: int, g: torch.Generator):
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    model = HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type=None, has_image_proj=True,
        image_proj_dim=16, has_clean_x_embedder=True)
    f = 3
    x, context = torch.randn(batch, 4, f, 4, 4, generator=g), torch.randn(batch, 6, 16, generator=g)
    pooled, image = torch.randn(batch, 8, generator=g), torch.randn(batch, 6, 16, generator=g)
    history = {  # the packed context frames: clean, 2x and 4x compressed history
        "latents_clean": torch.randn(batch, 4, f - 1, 4, 4, generator=g), "indices_latents_clean": torch.ones(f - 1),
        "latents_history_2x": torch.randn(batch, 4, f - 1, 4, 4, generator=g),
        "indices_latents_history_2x": torch.ones(f - 1),
        "latents_history_4x": torch.randn(batch, 4, (f - 1) * 4, 4, 4, generator=g),
        "indices_latents_history_4x": torch.ones((f - 1) * 4)}
    return model, x, lambda m, x, t: _sample(m(
        x, timestep=torch.full((batch,), int(t)), encoder_hidden_states=context,
        encoder_attention_mask=torch.ones(batch, 6), pooled_projections=pooled, image_embeds=image,
        indices_latents=torch.ones(f), guidance=torch.full((batch,), 3.0),
        **history))


def _hunyuanimage(batch: int, g: torch.Generator):
    from diffusers import HunyuanImageTransformer2DModel

    model = HunyuanImageTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=8,
                                           num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=(1, 1),
                                           guidance_embeds=False, text_embed_dim=32, text_embed_2_dim=32,
                                           rope_axes_dim=(4, 4))
    x, context = torch.randn(batch, 4, 4, 4, generator=g), torch.randn(batch, 6, 32, generator=g)
    context_2 = torch.randn(batch, 4, 32, generator=g)
    return model, x, lambda m, x, t: _sample(m(
        x, timestep=torch.full((batch,), float(t)), encoder_hidden_states=context,
        encoder_attention_mask=torch.ones(batch, 6), encoder_hidden_states_2=context_2,
        encoder_attention_mask_2=torch.ones(batch, 4)))


BUILDERS: dict[str, Callable] = {
    "chroma": _chroma, "hidream": _hidream, "hunyuandit": _hunyuandit, "bria": _bria, "ovis-image": _ovis,
    "flux2": _flux2, "auraflow": _auraflow, "lumina2": _lumina2,
    "z-image": _zimage, "hunyuanimage-2.1": _hunyuanimage, "cosmos": _cosmos, "allegro": _allegro,
    "easyanimate": _easyanimate, "skyreels-v2": _skyreels, "sana-video": _sana_video, "prx": _prx,
    "omnigen": _omnigen, "hunyuanvideo-framepack": _framepack,
}
VIDEO = ("cosmos", "allegro", "easyanimate", "skyreels-v2", "sana-video", "hunyuanvideo-framepack")


def build(family: str, batch: int = 2, seed: int = 0):
    """(perturbed model in eval mode, initial latents, step function); same seed -> same weights."""
    torch.manual_seed(seed)
    model, x, step = BUILDERS[family](batch, torch.Generator().manual_seed(seed + 1))
    return perturb(model), x, step


class Interrupted(Exception):
    """Raised by `run(..., fail_at=i)` after step i's model call, as a step-end callback that raises would."""


@torch.no_grad()
def run(model: torch.nn.Module, x: torch.Tensor, step: Step, steps: int = STEPS,
        fail_at: int | None = None) -> torch.Tensor:
    """A sampler-shaped loop in one cache context: the output feeds the next step's input (`fail_at`: raise
    `Interrupted` once that step's model call returned)."""
    outputs = []
    for i in range(steps):
        _set_cache_context(model, CacheContext("cond", step_index=i, num_inference_steps=steps))
        out = step(model, x, 900.0 - 150 * i)
        if i == fail_at:
            raise Interrupted(f"step {i}")
        out = out[:, : x.shape[1]] if out.shape != x.shape else out
        x = x - 0.1 * out
        outputs.append(out)
    return torch.stack(outputs)


@dataclass
class FamilyResult:
    """What the checks found for one family (`error`: why it failed or was refused)."""

    family: str
    model_class: str = ""
    stack: tuple[str, ...] = ()
    checks: dict[str, bool] = field(default_factory=dict)
    compute_fraction: float | None = None
    error: str = ""
    img2img: bool | None = None  # every `check_img2img` check held (None: no cheap img2img pipeline)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values()) and not self.error and self.img2img is not False


CHECKS = ("always bit-exact", "cached (fixed:2 + taylor:1: compute 0.5, output differs)", "clean repeat",
          "disable restores", "CFG layout (2 rows as one sample's copies)", "failed-call recovery")
FAILED_CALL = CHECKS[5]
FAIL_AT = 2  # the interrupted call raises once step 2's model call returned


def check_family(model: torch.nn.Module, x: torch.Tensor, step: Step, family: str = "") -> FamilyResult:
    """Run the checks on a fresh model: `always` bit-exact vs no cache; fixed:2 + taylor:1 computes half the
    steps and changes the output; repeating the cached call gives the same output; `disable` restores the
    plain model bit for bit; a call interrupted after step 2 leaves nothing that changes the next call (it
    equals the first cached one); with an even batch, the rows read as CFG copies of half as many samples get
    one decision per sample (fixed:2 then decides as before: same output)."""
    from cachepilot.runtime.adapters import get_adapter

    result = FamilyResult(family, type(model).__name__)
    result.stack = get_adapter(model).block_lists
    reference = run(model, x, step)
    cachepilot.enable(model, "always", num_inference_steps=STEPS)
    result.checks[CHECKS[0]] = torch.equal(run(model, x, step), reference)
    cachepilot.enable(model, "fixed:2", predictor="taylor:1", num_inference_steps=STEPS)
    cached = run(model, x, step)
    stats = cachepilot.last_stats(model)
    result.compute_fraction = stats.compute_fraction if stats is not None else None
    result.checks[CHECKS[1]] = (result.compute_fraction == 0.5 and bool(torch.isfinite(cached).all())
                                and not torch.allclose(cached, reference))
    result.checks[CHECKS[2]] = torch.equal(run(model, x, step), cached)
    try:  # an interrupted call leaves nothing that changes the next one
        run(model, x, step, fail_at=FAIL_AT)
    except Interrupted:
        result.checks[FAILED_CALL] = torch.equal(run(model, x, step), cached)
    cachepilot.disable(model)
    result.checks[CHECKS[3]] = torch.equal(run(model, x, step), reference)
    if x.shape[0] % 2 == 0:  # the batch read as [cond; uncond] copies of batch / 2 samples: decided per sample
        cachepilot.enable(model, "fixed:2", predictor="taylor:1", num_inference_steps=STEPS, cfg_copies=2)
        copies = run(model, x, step)
        stats = cachepilot.last_stats(model)
        cachepilot.disable(model)
        result.checks[CHECKS[4]] = (stats is not None and stats.batch_size == x.shape[0] // 2
                                    and stats.compute_fraction == 0.5 and torch.equal(copies, cached))
    return result


# Families whose tiny pipeline (tests/tiny_pipelines.py) has an img2img twin built from the same components.
IMG2IMG = {"flux": "FluxImg2ImgPipeline", "sd3": "StableDiffusion3Img2ImgPipeline"}
IMG2IMG_CHECKS = ("always bit-exact", "cached (fixed:2 + taylor:1: compute 0.5 of the steps strength leaves, "
                  "output differs)", "clean repeat", "disable restores")


def _tiny_pipelines():
    try:
        from .. import tiny_pipelines  # imported as tests.runtime.more_families (pytest)
    except ImportError:
        import tiny_pipelines  # imported top-level (experiments/families_table.py puts tests/ on the path)
    return tiny_pipelines


def build_tiny_models_family(family: str, batch: int = 2):
    """A tiny_models.FAMILIES family as `build` gives the others: (perturbed model, latents, step function)."""
    try:
        from . import tiny_models
    except ImportError:
        import tiny_models
    model, x, kwargs = tiny_models.build(family, batch)
    return perturb(model), x, lambda m, x, t: m(x, **kwargs(t)).sample


@torch.no_grad()
def check_img2img(family: str, root) -> dict[str, bool]:
    """The family checks on its tiny img2img pipeline (saved under `root`): strength 0.5 of 8 steps runs 4, and
    fixed:2 computes 2 of them."""
    import diffusers

    tiny = _tiny_pipelines()
    path = tiny.build_tiny_pipeline(family, root / family)
    pipe = getattr(diffusers, IMG2IMG[family]).from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {**tiny.call_kwargs(family), "height": 32, "width": 32}
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def call() -> torch.Tensor:
        return pipe(prompt=["a red circle", "a blue square"], image=image, strength=0.5, num_inference_steps=8,
                    output_type="pt", generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **kwargs).images

    reference, checks = call(), {}
    cachepilot.enable(pipe, "always")
    checks[IMG2IMG_CHECKS[0]] = torch.equal(call(), reference)
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    cached = call()
    stats = cachepilot.last_stats(pipe)
    checks[IMG2IMG_CHECKS[1]] = (stats is not None and stats.num_steps == 4 and stats.compute_fraction == 0.5
                                 and not torch.equal(cached, reference))
    checks[IMG2IMG_CHECKS[2]] = torch.equal(call(), cached)
    cachepilot.disable(pipe)
    checks[IMG2IMG_CHECKS[3]] = torch.equal(call(), reference)
    return checks


def check_wan22_pipeline() -> FamilyResult:
    """The checks on Wan 2.2 (transformer + transformer_2) through whole tiny WanPipeline calls, 4 steps, CFG
    (the failed call: a step-end callback raises at step 2)."""
    tiny = _tiny_pipelines()
    wan22_call_kwargs = tiny.wan22_call_kwargs
    pipe = tiny.wan22_pipeline()
    result = FamilyResult("wan-2.2 (pipeline, 2 experts)", "WanPipeline")
    result.stack = ("transformer.blocks", "transformer_2.blocks")

    def call():
        return pipe(**wan22_call_kwargs(), num_inference_steps=4, generator=torch.Generator().manual_seed(0)).frames

    reference = call()
    cachepilot.enable(pipe, "always")
    checks = result.checks
    checks[CHECKS[0]] = torch.equal(call(), reference)
    cachepilot.enable(pipe, "fixed:2", predictor="taylor:1")
    cached = call()
    stats = cachepilot.last_stats(pipe)
    result.compute_fraction = stats.compute_fraction if stats is not None else None
    checks[CHECKS[1]] = result.compute_fraction == 0.5 and not torch.equal(cached, reference)
    checks[CHECKS[2]] = torch.equal(call(), cached)

    def interrupt(pipeline, i, t, kwargs):  # a step-end callback that raises mid-loop
        if i == FAIL_AT:
            raise Interrupted(f"step {i}")
        return kwargs

    try:
        pipe(**wan22_call_kwargs(), num_inference_steps=4, generator=torch.Generator().manual_seed(0),
             callback_on_step_end=interrupt)
    except Interrupted:
        checks[FAILED_CALL] = torch.equal(call(), cached)
    cachepilot.disable(pipe)
    checks[CHECKS[3]] = torch.equal(call(), reference)
    return result
