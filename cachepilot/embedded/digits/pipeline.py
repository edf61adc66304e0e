"""`DigitsDiTPipeline`: class-conditional sampling with a pixel-space DiT, diffusers-style.

diffusers' own `DiTPipeline` needs a VAE and guides only part of the channels; the embedded
model works directly on 8x8 pixels, so this pipeline mirrors its `__call__` without a VAE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, DiTTransformer2DModel, ImagePipelineOutput, SchedulerMixin
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.utils.torch_utils import randn_tensor

from cachepilot.errors import InvalidInputError

DEFAULT_GUIDANCE_SCALE = 1.0


class DigitsDiTPipeline(DiffusionPipeline):
    """transformer: a class-conditional `DiTTransformer2DModel` (null class = `num_embeds_ada_norm`);
    scheduler: any diffusers scheduler (the embedded checkpoint ships DDIM)."""

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer: DiTTransformer2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @property
    def do_classifier_free_guidance(self) -> bool:
        """True while a call runs both halves [cond; uncond] in one batch (cache hooks read it)."""
        return getattr(self, "_guidance_scale", 1.0) != 1.0

    @property
    def num_classes(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    def _class_tensor(self, class_labels: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        if isinstance(class_labels, torch.Tensor):
            labels = class_labels.flatten().tolist()
        elif isinstance(class_labels, (int, np.integer)):
            labels = [int(class_labels)]
        else:
            labels = list(class_labels)
        if not labels:
            raise InvalidInputError("class_labels is empty: give at least one class id")
        for label in labels:
            if (isinstance(label, bool) or not isinstance(label, (int, np.integer))
                    or not 0 <= label < self.num_classes):
                raise InvalidInputError(
                    f"unknown class id {label!r}: this model knows classes 0..{self.num_classes - 1}"
                )
        return torch.tensor([int(x) for x in labels], device=self._execution_device, dtype=torch.long)

    def check_inputs(
        self,
        class_labels: int | Sequence[int] | torch.Tensor,
        num_inference_steps: int,
        guidance_scale: float,
        output_type: str = "pt",
    ) -> torch.Tensor:
        """Validate the call's arguments up front; returns the class labels as a tensor."""
        labels = self._class_tensor(class_labels)
        if (isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer))
                or num_inference_steps < 1):
            raise InvalidInputError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        limit = self.scheduler.config.num_train_timesteps
        if num_inference_steps > limit:
            raise InvalidInputError(f"num_inference_steps must be at most the scheduler's num_train_timesteps "
                                    f"({limit}), got {num_inference_steps}")
        if not isinstance(guidance_scale, (int, float)) or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if output_type not in ("pil", "np", "pt"):
            raise InvalidInputError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return labels

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | Sequence[int] | torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """Sample one image per class label.

        guidance_scale: classifier-free guidance weight w in eps = eps_u + w (eps_c - eps_u);
        w = 1 runs the conditional branch only (one model call per step), any other w >= 0 runs
        both halves in one batch [cond; uncond]. A list of generators gives each sample its own
        noise, so a sample does not depend on what else is in the batch.
        output_type: "pil" (list of grey PIL images), "np" (N, 8, 8, 1) in [0, 1], or "pt" (N, 1, 8, 8).
        callback_on_step_end: diffusers' step callback, `fn(pipe, step, timestep, {"latents": ...})`
        returning the (possibly changed) tensors; cachepilot's sampling driver reads the latents with it.
        """
        labels = self.check_inputs(class_labels, num_inference_steps, guidance_scale, output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InvalidInputError(f"callback_on_step_end_tensor_inputs may hold {self._callback_tensor_inputs}, "
                                    f"got {sorted(unknown)}")
        batch = labels.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise InvalidInputError(f"got {len(generator)} generators for {batch} class labels")
        config = self.transformer.config
        shape = (batch, config.in_channels, config.sample_size, config.sample_size)
        device, dtype = self._execution_device, self.transformer.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise InvalidInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        self._guidance_scale = guidance_scale
        use_cfg = self.do_classifier_free_guidance
        model_labels = torch.cat([labels, torch.full_like(labels, self.num_classes)]) if use_cfg else labels
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        hooked = getattr(self.transformer, "_diffusers_hook", None) is not None
        try:
            for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
                if hooked:  # DiT has no `cache_context`: tell cache hooks where the loop is
                    _set_cache_context(self.transformer, CacheContext(
                        "denoise", step_index=i, num_inference_steps=num_inference_steps, timestep=t))
                model_input = torch.cat([latents, latents]) if use_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = self.transformer(model_input, timestep=t.expand(model_input.shape[0]),
                                              class_labels=model_labels).sample
                if use_cfg:
                    cond, uncond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred, t, latents).prev_sample
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)
        finally:
            if hooked:  # close the context and reset stateful hooks, whatever happened in the loop
                _set_cache_context(self.transformer, None)
                self.transformer._diffusers_hook.reset_stateful_hooks(recurse=True)
        images = (latents.float() / 2 + 0.5).clamp(0, 1)
        self.maybe_free_model_hooks()
        if output_type == "pt":
            output = images
        else:
            output = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                output = self.numpy_to_pil(output)
        if not return_dict:
            return (output,)
        return ImagePipelineOutput(images=output)
