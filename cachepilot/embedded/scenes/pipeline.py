"""The embedded text-to-image pipeline of the scenes: an *unmodified* diffusers `FluxPipeline`, tiny.

`build_scenes_flux(...)` builds it with fresh weights, offline:

- `vae`: `AutoencoderKL`, 3 blocks (scale factor 4): 32x32x3 images <-> 8x8x4 latents, no quant
  convs, `shift_factor` 0 and `scaling_factor` set after training from the latents' std;
- `tokenizer` / `tokenizer_2`: the phase-1 word-level caption tokenizer (`build_tokenizer`), in both
  slots (max length 16 = the longest caption + [EOS]);
- `text_encoder`: a small `CLIPTextModel` (its pooled output feeds the transformer's pooled
  projection); `text_encoder_2`: a small `T5EncoderModel` (its hidden states are the text tokens);
- `transformer`: a tiny `FluxTransformer2DModel` on the 16 packed latent tokens (2x2 patches of the
  8x8x4 latents = 16 channels), `guidance_embeds=False` (no distilled guidance: use true CFG);
- `scheduler`: `FlowMatchEulerDiscreteScheduler` with Flux's dynamic shifting.

Calling it (see `call_kwargs`): ``pipe(prompt, height=32, width=32, max_sequence_length=16,
num_inference_steps=20, negative_prompt="", true_cfg_scale=3.0)``. Pass `max_sequence_length=16`:
FluxPipeline's default of 512 pads the T5 tokens to 512, which the model never saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cachepilot.embedded.scenes.tokenizer import DEFAULT_MAX_LENGTH, build_tokenizer

IMAGE_SIZE = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8
TEXT_LENGTH = DEFAULT_MAX_LENGTH  # 16 tokens, CLIP and T5 slots alike


@dataclass(frozen=True)
class ScenesFluxConfig:
    """Sizes of the parts. The defaults are the shipped model's."""
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 8
    text_dim: int = 64            # CLIP hidden = T5 d_model = pooled / joint attention dims
    text_layers: int = 2
    text_heads: int = 2
    num_layers: int = 2           # double-stream blocks
    num_single_layers: int = 4
    num_heads: int = 4
    head_dim: int = 32            # = sum(axes_dims_rope)
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)

    def to_dict(self) -> dict:
        return asdict(self)


TINY_CONFIG = ScenesFluxConfig(vae_channels=(8, 8, 8), vae_norm_groups=4, text_dim=16, text_layers=1,
                               num_layers=1, num_single_layers=1, num_heads=2, head_dim=16,
                               axes_dims_rope=(4, 6, 6))


def build_vae(config: ScenesFluxConfig = ScenesFluxConfig()):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels),
        block_out_channels=tuple(config.vae_channels), layers_per_block=config.vae_layers_per_block,
        latent_channels=LATENT_CHANNELS, norm_num_groups=config.vae_norm_groups, sample_size=IMAGE_SIZE,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0,
        mid_block_add_attention=False)


def build_text_encoders(tokenizer, config: ScenesFluxConfig = ScenesFluxConfig()):
    """(CLIPTextModel, T5EncoderModel), eval mode, no dropout."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    d = config.text_dim
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads, max_position_embeddings=tokenizer.model_max_length,
        projection_dim=d, hidden_act="quick_gelu", layer_norm_eps=1e-5, dropout=0.0, attention_dropout=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=d, d_kv=d // config.text_heads, d_ff=2 * d,
        num_layers=config.text_layers, num_heads=config.text_heads, relative_attention_num_buckets=16,
        relative_attention_max_distance=32, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, use_cache=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0))
    return clip.eval(), t5.eval()


def build_transformer(config: ScenesFluxConfig = ScenesFluxConfig()):
    from diffusers import FluxTransformer2DModel

    if sum(config.axes_dims_rope) != config.head_dim:
        raise ValueError(f"axes_dims_rope {config.axes_dims_rope} must sum to head_dim {config.head_dim}")
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=config.num_layers,
        num_single_layers=config.num_single_layers, attention_head_dim=config.head_dim,
        num_attention_heads=config.num_heads, joint_attention_dim=config.text_dim,
        pooled_projection_dim=config.text_dim, guidance_embeds=False, axes_dims_rope=tuple(config.axes_dims_rope))


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)


def build_scenes_flux(config: ScenesFluxConfig = ScenesFluxConfig(), seed: int = 0, vae=None, text_encoder=None,
                      text_encoder_2=None, transformer=None):
    """A `FluxPipeline` of the scenes; parts not given are freshly built (seeded by `seed`)."""
    from diffusers import FluxPipeline

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TEXT_LENGTH)
    if text_encoder is None or text_encoder_2 is None:
        clip, t5 = build_text_encoders(tokenizer, config)
        text_encoder = clip if text_encoder is None else text_encoder
        text_encoder_2 = t5 if text_encoder_2 is None else text_encoder_2
    pipe = FluxPipeline(
        scheduler=build_scheduler(), vae=(vae if vae is not None else build_vae(config)).eval(),
        text_encoder=text_encoder.eval(), tokenizer=tokenizer, text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=build_tokenizer(TEXT_LENGTH),
        transformer=(transformer if transformer is not None else build_transformer(config)).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_kwargs(true_cfg_scale: float = 1.0, num_inference_steps: int = 20) -> dict:
    """The keyword arguments a call needs (add `prompt`, `generator`, `output_type`)."""
    kwargs = dict(height=IMAGE_SIZE, width=IMAGE_SIZE, max_sequence_length=TEXT_LENGTH,
                  num_inference_steps=num_inference_steps)
    if true_cfg_scale > 1.0:
        kwargs.update(negative_prompt="", true_cfg_scale=float(true_cfg_scale))
    return kwargs


# ----------------------------------------------------------------- the pipeline's conventions, for training

def tokenize(tokenizer, captions, max_length: int = TEXT_LENGTH) -> torch.Tensor:
    """Token ids exactly as FluxPipeline tokenizes (both slots: padding to `max_length`, truncation)."""
    return tokenizer(list(captions), padding="max_length", max_length=max_length, truncation=True,
                     return_length=False, return_overflowing_tokens=False, return_tensors="pt").input_ids


def encode_text(text_encoder, text_encoder_2, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds (B, L, d) from T5, pooled (B, d) from CLIP), as `FluxPipeline.encode_prompt` computes
    them (no attention mask in either encoder). Gradients flow when the encoders train."""
    pooled = text_encoder(ids, output_hidden_states=False).pooler_output
    embeds = text_encoder_2(ids, output_hidden_states=False)[0]
    return embeds, pooled


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, 8, 8) scaled latents -> (B, 16, 16) tokens, `FluxPipeline._pack_latents`."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def image_ids(device=None, dtype=torch.float32) -> torch.Tensor:
    from diffusers import FluxPipeline

    return FluxPipeline._prepare_latent_image_ids(1, LATENT_SIZE // 2, LATENT_SIZE // 2, device, dtype)


def text_ids(length: int = TEXT_LENGTH, device=None, dtype=torch.float32) -> torch.Tensor:
    return torch.zeros(length, 3, device=device, dtype=dtype)  # as FluxPipeline.encode_prompt


def transformer_forward(transformer, x_t: torch.Tensor, sigma: torch.Tensor, embeds, pooled) -> torch.Tensor:
    """The transformer call of FluxPipeline's denoising loop: `timestep` = sigma (= t / 1000)."""
    return transformer(hidden_states=x_t, timestep=sigma.to(x_t.dtype), guidance=None, pooled_projections=pooled,
                       encoder_hidden_states=embeds, txt_ids=text_ids(embeds.shape[1], x_t.device, x_t.dtype),
                       img_ids=image_ids(x_t.device, x_t.dtype), return_dict=False)[0]
