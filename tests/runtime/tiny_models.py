"""Tiny configs of the tested model families (images and videos), and a sampler-like driver for them.

Each builder: (batch, generator) -> (model, initial latents, kwargs-for-timestep function); the model is
built first, so the same seed gives the same weights whatever the batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import (
    CogVideoXTransformer3DModel, DiTTransformer2DModel, FluxTransformer2DModel, HunyuanVideoTransformer3DModel,
    LTXVideoTransformer3DModel, PixArtTransformer2DModel, QwenImageTransformer2DModel, SanaTransformer2DModel,
    SD3Transformer2DModel, WanTransformer3DModel,
)
from diffusers.hooks.hooks import CacheContext, _set_cache_context


def _dit(batch: int, g: torch.Generator):
    model = DiTTransformer2DModel(num_layers=3, num_attention_heads=2, attention_head_dim=8, in_channels=1,
                                  out_channels=1, sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    x = torch.randn(batch, 1, 8, 8, generator=g)
    return model, x, lambda t: dict(timestep=torch.full((batch,), int(t)),
                                    class_labels=torch.arange(batch) % 11)


def _pixart(batch: int, g: torch.Generator):
    model = PixArtTransformer2DModel(num_layers=3, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                     out_channels=8, sample_size=8, patch_size=2, cross_attention_dim=16,
                                     caption_channels=32, num_embeds_ada_norm=1000)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 5, 32, generator=g)
    return model, x, lambda t: dict(encoder_hidden_states=context, timestep=torch.full((batch,), int(t)),
                                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def _sd3(batch: int, g: torch.Generator):
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                  pooled_projection_dim=24, out_channels=4, pos_embed_max_size=16)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context, pooled = torch.randn(batch, 5, 32, generator=g), torch.randn(batch, 24, generator=g)
    return model, x, lambda t: dict(encoder_hidden_states=context, pooled_projections=pooled,
                                    timestep=torch.full((batch,), float(t)))


def _flux(batch: int, g: torch.Generator):
    model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=2,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                   pooled_projection_dim=24, axes_dims_rope=(4, 6, 6))
    n, text = 16, 5
    img_ids = torch.zeros(n, 3)
    img_ids[:, 1], img_ids[:, 2] = torch.arange(n) // 4, torch.arange(n) % 4
    x = torch.randn(batch, n, 4, generator=g)
    context, pooled = torch.randn(batch, text, 32, generator=g), torch.randn(batch, 24, generator=g)
    return model, x, lambda t: dict(encoder_hidden_states=context, pooled_projections=pooled,
                                    timestep=torch.full((batch,), t / 1000), img_ids=img_ids,
                                    txt_ids=torch.zeros(text, 3))


def _text_mask(batch: int) -> torch.Tensor:
    """Text attention mask: samples after the first have 2 padded tokens (per-sample masks get sliced)."""
    mask = torch.ones(batch, 5)
    mask[1:, 3:] = 0
    return mask


def _sana(batch: int, g: torch.Generator):
    model = SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                   num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                   cross_attention_dim=16, caption_channels=32, sample_size=8, patch_size=2)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 5, 32, generator=g)
    return model, x, lambda t: dict(encoder_hidden_states=context, timestep=torch.full((batch,), int(t)))


def _wan(batch: int, g: torch.Generator):
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                  out_channels=4, text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2,
                                  rope_max_seq_len=32)
    x = torch.randn(batch, 4, 3, 8, 8, generator=g)  # (B, C, F, H, W)
    context = torch.randn(batch, 5, 32, generator=g)
    return model, x, lambda t: dict(timestep=torch.full((batch,), int(t)), encoder_hidden_states=context)


def _qwen(batch: int, g: torch.Generator):
    model = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                        axes_dims_rope=(4, 6, 6))
    h = w = 4  # packed 2x2 patches of an 8x8 latent
    x = torch.randn(batch, h * w, 16, generator=g)
    context = torch.randn(batch, 5, 32, generator=g)
    mask = _text_mask(batch)
    return model, x, lambda t: dict(encoder_hidden_states=context, encoder_hidden_states_mask=mask,
                                    timestep=torch.full((batch,), t / 1000), img_shapes=[[(1, h, w)]] * batch)


def _cogvideox(batch: int, g: torch.Generator):
    model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                        time_embed_dim=16, text_embed_dim=32, num_layers=2, sample_width=8,
                                        sample_height=8, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
                                        max_text_seq_length=5)
    x = torch.randn(batch, 3, 4, 8, 8, generator=g)  # CogVideoX latents are (B, F, C, H, W)
    context = torch.randn(batch, 5, 32, generator=g)
    return model, x, lambda t: dict(encoder_hidden_states=context, timestep=torch.full((batch,), int(t)))


def _hunyuan(batch: int, g: torch.Generator):
    model = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                           num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=2,
                                           patch_size_t=1, guidance_embeds=False, text_embed_dim=32,
                                           pooled_projection_dim=24, rope_axes_dim=(2, 2, 4))
    x = torch.randn(batch, 4, 3, 8, 8, generator=g)
    context, pooled = torch.randn(batch, 5, 32, generator=g), torch.randn(batch, 24, generator=g)
    mask = _text_mask(batch)
    return model, x, lambda t: dict(timestep=torch.full((batch,), int(t)), encoder_hidden_states=context,
                                    encoder_attention_mask=mask, pooled_projections=pooled)


def _ltx(batch: int, g: torch.Generator):
    model = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                                       cross_attention_dim=16, num_layers=2, caption_channels=32)
    f, h, w = 2, 4, 4
    x = torch.randn(batch, f * h * w, 8, generator=g)  # packed video tokens
    context = torch.randn(batch, 5, 32, generator=g)
    mask = _text_mask(batch)
    return model, x, lambda t: dict(encoder_hidden_states=context, timestep=torch.full((batch,), int(t)),
                                    encoder_attention_mask=mask, num_frames=f, height=h, width=w)


FAMILIES: dict[str, Callable] = {
    "dit": _dit, "pixart": _pixart, "sd3": _sd3, "flux": _flux, "sana": _sana, "qwenimage": _qwen,
    "wan": _wan, "cogvideox": _cogvideox, "hunyuanvideo": _hunyuan, "ltx": _ltx,
}
VIDEO_FAMILIES = ("wan", "cogvideox", "hunyuanvideo", "ltx")


def build(family: str, batch: int, seed: int = 0):
    """(model in eval mode, initial latents, kwargs-for-timestep function); same seed -> same weights."""
    torch.manual_seed(seed)
    model, x, kwargs = FAMILIES[family](batch, torch.Generator().manual_seed(seed + 1))
    return model.eval(), x, kwargs


@torch.no_grad()
def run(model: torch.nn.Module, x: torch.Tensor, kwargs: Callable, steps: int, context: bool = True) -> torch.Tensor:
    """A sampler-shaped loop: the output feeds the next step's input; returns all step outputs."""
    outputs = []
    for i in range(steps):
        t = 900 - 150 * i
        if context:
            _set_cache_context(model, CacheContext("cond", step_index=i, num_inference_steps=steps))
        out = model(x, **kwargs(t)).sample
        out = out[:, : x.shape[1]] if out.shape[1] != x.shape[1] else out  # PixArt learns sigma: keep eps
        x = x - 0.1 * out
        outputs.append(out)
    return torch.stack(outputs)
