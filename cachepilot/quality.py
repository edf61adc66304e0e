"""Fidelity of a cached generation to full compute, for any model: PSNR and SSIM of each image (or video
frame) vs. the full-compute output of the same seed and condition."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from cachepilot.errors import InvalidInputError
from cachepilot.finite import check_finite


class FeatureExtractor(torch.nn.Module):
    """A model's `features(images)` as the feature extractor torchmetrics' FID calls (it reads `num_features`):
    how each embedded model's judge gives a Fréchet distance in its own feature space."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_features = model.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images).float()


@torch.no_grad()
def frechet_distance(model: torch.nn.Module, images: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to `model.features` of two image sets (N >= 2 each): torchmetrics'
    FID with a model's own feature space (the embedded models' judges), an offline stand-in for Inception's.

    NaN / inf images or features raise `NonFiniteError` first: torchmetrics' matrix square root on NaN features
    crashes the process (MKL segfault) instead of returning NaN."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(images) < 2 or len(reference) < 2:
        raise InvalidInputError(
            f"a Fréchet distance needs at least 2 images in each set, got {len(images)} and {len(reference)}")
    check_finite(images, "the generated images given to the Fréchet distance")
    check_finite(reference, "the reference images given to the Fréchet distance")
    model.eval()
    device = next(model.parameters()).device
    images, reference = images.to(device, torch.float32), reference.to(device, torch.float32)
    for name, batch in (("generated", images), ("reference", reference)):
        check_finite(model.features(batch), f"the judge's features of the {name} images")
    # the two image sets are this process's: no gathering over a torchrun group (a fit's bench runs on rank 0 alone)
    metric = FrechetInceptionDistance(
        feature=FeatureExtractor(model), normalize=True, input_img_size=tuple(images.shape[1:]),
        sync_on_compute=False).to(device)
    metric.update(reference, real=True)
    metric.update(images, real=False)
    return metric.compute().item()


def _frames(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as is; video (N, F, C, H, W) as N x F frames."""
    return images.flatten(0, 1) if images.ndim == 5 else images


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The PSNR (dB, data range 1) of each image (frame) vs. its reference, capped at 100 dB (identical images: inf,
    capped so means stay finite): per-sample values for paired standard errors."""
    images, reference = _frames(images), _frames(reference)
    check_finite(images, "the images given to PSNR")
    check_finite(reference, "the reference images given to PSNR")
    values = peak_signal_noise_ratio(images, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return values.clamp(max=100.0)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over images (frames) of the PSNR (dB, data range 1) of each vs. its reference."""
    return psnr_per_image(images, reference).mean().item()


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM of each image (frame) vs. its reference (Gaussian window up to 11, at most the image side)."""
    images, reference = _frames(images), _frames(reference)
    check_finite(images, "the images given to SSIM")
    check_finite(reference, "the reference images given to SSIM")
    side = min(images.shape[-2:])
    kernel = max(3, min(11, side - (1 - side % 2)))
    return structural_similarity_index_measure(images, reference, data_range=1.0, kernel_size=kernel).item()
