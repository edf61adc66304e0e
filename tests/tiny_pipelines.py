"""Tiny, random-weight, *unmodified* diffusers pipelines of the four supported families, built offline.

`build_tiny_pipeline(family, path)` builds a pipeline from freshly initialised components (seeded with
`torch.manual_seed(0)`, so the same call gives the same weights), puts every torch module in eval mode,
saves it with `save_pretrained(path)` and returns `path`. It loads back with
`diffusers.DiffusionPipeline.from_pretrained(path, local_files_only=True)`. Nothing is downloaded:
tokenizers are built from a small word list (`WORDS`).

Every family decodes 32 x 32 RGB images: the VAE has 3 blocks (scale factor 4), latents are 8 x 8.

Call kwargs each family needs for a cheap call (`call_kwargs(family)`; add `num_inference_steps`,
`generator`, `output_type` yourself):

* ``flux``  (FluxPipeline, guidance-distilled "dev" layout: ``guidance_embeds=True``)
  ``height=32, width=32, max_sequence_length=8, guidance_scale=3.5``. The guidance scale only feeds the
  guidance embedding: no classifier-free guidance, the transformer sees batch B. (True CFG would need
  ``true_cfg_scale > 1`` plus ``negative_prompt``; it runs cond and uncond as two separate transformer
  calls per step.) Conditions: ``prompt``. Supports ``callback_on_step_end``; latents are packed (B, 16, 16).
* ``sd3``  (StableDiffusion3Pipeline) ``height=32, width=32, max_sequence_length=8, guidance_scale=5.0``:
  CFG, the transformer sees batch 2B ([uncond; cond]). Conditions: ``prompt``. Supports
  ``callback_on_step_end``; latents (B, 4, 8, 8).
* ``pixart-sigma``  (PixArtSigmaPipeline, learned sigma: out_channels = 2 x in_channels)
  ``height=32, width=32, max_sequence_length=8, guidance_scale=4.5, use_resolution_binning=False,
  clean_caption=False``: CFG, batch 2B ([uncond; cond]). Conditions: ``prompt``. Has only the legacy
  ``callback(step, t, latents)`` / ``callback_steps``; its ``**kwargs`` silently swallows
  ``callback_on_step_end``.
* ``dit``  (DiTPipeline, learned sigma, DiT-XL/2 layout) ``guidance_scale=4.0``: CFG, batch 2B
  ([cond; null class 1000]); the image size is fixed by ``transformer.config.sample_size``. Conditions:
  ``class_labels`` (list of ints in 0..9; ``pipe.labels`` maps the 10 names of ``DIT_ID2LABEL`` to ids).
  No callback at all. ``num_embeds_ada_norm`` is 1000 because DiTPipeline hardcodes the null class id 1000.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch

FAMILIES = ("flux", "sd3", "pixart-sigma", "dit")

COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple")
SHAPES = ("circle", "square", "triangle", "star", "line", "dot", "cross", "ring")
SIZES = ("small", "big", "tiny", "large")
RELATIONS = ("above", "below", "left", "right", "of", "next", "to", "on", "in", "and")
WORDS = ("a", "an", "the", "photo", "drawing", "with", *COLOURS, *SHAPES, *SIZES, *RELATIONS)

DIT_ID2LABEL = {i: name for i, name in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}

_CLIP_MAX_LENGTH = 16  # tokenizer.model_max_length == text_encoder.config.max_position_embeddings
_T5_MAX_LENGTH = 16  # max_sequence_length passed at call time
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------------------- tokenizers


def _clip_tokenizer():
    """A CLIP BPE tokenizer: every word of WORDS is one token, any other lowercase word splits."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for ch in _LETTERS + ".,!":
        add(ch)
        add(ch + "</w>")
    merges: list[tuple[str, str]] = []
    seen = set()
    for word in WORDS:  # left-to-right merge chain: (w, o), (wo, r), (wor, d</w>)
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in seen:
                seen.add((current, piece))
                merges.append((current, piece))
            current += piece
            add(current)
    add("<|startoftext|>")
    add("<|endoftext|>")  # last id, like the real CLIP vocabulary
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=_CLIP_MAX_LENGTH)


def _t5_tokenizer():
    """A T5 (Unigram) tokenizer: <pad>=0, </s>=1, <unk>=2, whole words preferred over letters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + word, -1.0) for word in WORDS]
    pieces += [(ch, -5.0) for ch in _LETTERS + ".,!"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


# ------------------------------------------------------------------------------------------- encoders


def _clip_config(tokenizer, hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=_CLIP_MAX_LENGTH, projection_dim=projection,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, dropout=0.0, attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


def _t5_encoder(tokenizer, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0)
    return T5EncoderModel(config)


def _vae(latent_channels: int = 4, flow: bool = False):
    """3 blocks (scale factor 4); flow-matching families (Flux, SD3) use shift/scale and no quant convs."""
    from diffusers import AutoencoderKL

    extra: dict[str, Any] = {}
    if flow:
        extra = dict(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8), layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=4, sample_size=32, **extra)


# ------------------------------------------------------------------------------------------ pipelines


def _flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    text_encoder_2 = _t5_encoder(tokenizer_2, d_model=32)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6))
    vae = _vae(latent_channels=4, flow=True)  # packed 2x2 -> transformer in_channels 16
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def _sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2, tokenizer_3 = _clip_tokenizer(), _clip_tokenizer(), _t5_tokenizer()
    # CLIP hidden states (32 + 32) are padded to the T5 width (64); pooled = 16 + 16 projections.
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, hidden=32, projection=16))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, hidden=32, projection=16))
    text_encoder_3 = _t5_encoder(tokenizer_3, d_model=64)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=32, out_channels=4,
        pos_embed_max_size=16)
    vae = _vae(latent_channels=4, flow=True)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3)


def _pixart_sigma():
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    tokenizer = _t5_tokenizer()
    text_encoder = _t5_encoder(tokenizer, d_model=32)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=32, attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=32, use_additional_conditions=False)
    vae = _vae(latent_channels=4)
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", solver_order=2, prediction_type="epsilon",
        algorithm_type="dpmsolver++", lower_order_final=True)
    return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=scheduler)


def _dit():
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
        patch_size=2, num_embeds_ada_norm=1000)  # DiTPipeline's null (CFG) class is hardcoded to id 1000
    vae = _vae(latent_channels=4)
    scheduler = DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label=DIT_ID2LABEL)
    pipe.register_to_config(id2label={str(k): v for k, v in DIT_ID2LABEL.items()})  # -> model_index.json
    return pipe


def _wan_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32)


def wan22_pipeline(boundary_ratio: float = 0.875) -> Any:
    """A tiny Wan 2.2 (mixture of experts) `WanPipeline`, in memory: `transformer` denoises the steps whose
    timestep is at or above boundary_ratio x 1000, `transformer_2` the rest. Both transformers' weights are
    perturbed (their output layers start at zero-like scales otherwise). Call with `wan22_call_kwargs()`;
    CFG runs cond and uncond as two transformer calls per step (cache contexts "cond" / "uncond")."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    torch.manual_seed(0)
    tokenizer = _t5_tokenizer()
    text_encoder = _t5_encoder(tokenizer, d_model=32)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    transformer, transformer_2 = _wan_transformer(), _wan_transformer()
    with torch.no_grad():
        for param in [*transformer.parameters(), *transformer_2.parameters()]:
            param.add_(0.05 * torch.randn_like(param))
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer, transformer_2=transformer_2, boundary_ratio=boundary_ratio)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan22_call_kwargs() -> dict[str, Any]:
    """A cheap Wan 2.2 call: 16 x 16, 5 frames, CFG on (add `num_inference_steps`, `generator`)."""
    return dict(prompt="a red circle", negative_prompt="blue", height=16, width=16, num_frames=5,
                guidance_scale=4.0, max_sequence_length=_T5_MAX_LENGTH, output_type="pt")


_BUILDERS = {"flux": _flux, "sd3": _sd3, "pixart-sigma": _pixart_sigma, "dit": _dit}


def build_tiny_pipeline(family: str, path: pathlib.Path) -> pathlib.Path:
    """Build the tiny `family` pipeline (same weights on every call), save it to `path` and return `path`."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    path = pathlib.Path(path)
    torch.manual_seed(0)
    pipe = _BUILDERS[family]()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.save_pretrained(path)
    return path


def call_kwargs(family: str) -> dict[str, Any]:
    """Family-specific kwargs for a cheap call (see the module docstring); CFG is on where the pipeline has it."""
    kwargs: dict[str, dict[str, Any]] = {
        "flux": dict(height=32, width=32, max_sequence_length=_T5_MAX_LENGTH, guidance_scale=3.5),
        "sd3": dict(height=32, width=32, max_sequence_length=_T5_MAX_LENGTH, guidance_scale=5.0),
        "pixart-sigma": dict(height=32, width=32, max_sequence_length=_T5_MAX_LENGTH, guidance_scale=4.5,
                             use_resolution_binning=False, clean_caption=False),
        "dit": dict(guidance_scale=4.0),
    }
    if family not in kwargs:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return dict(kwargs[family])


def example_condition(family: str, i: int) -> dict[str, Any]:
    """The i-th per-sample condition: {"prompt": str} for text families, {"class_labels": int} for dit."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if family == "dit":
        return {"class_labels": i % len(DIT_ID2LABEL)}
    size, colour, shape = SIZES[i % len(SIZES)], COLOURS[i % len(COLOURS)], SHAPES[(i // 2) % len(SHAPES)]
    other_colour, other_shape = COLOURS[(i + 3) % len(COLOURS)], SHAPES[(i + 5) % len(SHAPES)]
    relation = ("above", "below", "next to", "left of")[i % 4]
    return {"prompt": f"a {size} {colour} {shape} {relation} a {other_colour} {other_shape}"}


def collate_conditions(conditions: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-sample conditions -> batched call kwargs, e.g. {"prompt": [p0, p1]} or {"class_labels": [3, 4]}."""
    return {key: [c[key] for c in conditions] for key in conditions[0]}
