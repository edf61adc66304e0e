"""Quality of generated digits, judged by the reference classifier.

class accuracy: does the classifier agree with the requested class?
Fréchet distance: torchmetrics' FID with the classifier's penultimate layer as feature extractor,
an offline stand-in for FID (Inception weights cannot be downloaded here).
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from cachepilot.embedded.digits.classifier import DigitsClassifier
from cachepilot.finite import check_finite
from cachepilot.quality import FeatureExtractor


@torch.no_grad()
def class_accuracy(classifier: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """images (N, 1, 8, 8) in [0, 1]; share of images classified as their requested label."""
    classifier.eval()
    check_finite(images, "the images given to the class accuracy")
    predicted = classifier(images.to(classifier.device)).argmax(-1).cpu()
    return (predicted == labels.cpu()).float().mean().item()


@torch.no_grad()
def frechet_distance(classifier: DigitsClassifier, images: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to classifier features of two image sets.

    NaN / inf images or features raise `NonFiniteError` first: torchmetrics' matrix square root on NaN
    features crashes the process (MKL segfault) instead of returning NaN."""
    classifier.eval()
    check_finite(images, "the generated images given to the Fréchet distance")
    check_finite(reference, "the reference images given to the Fréchet distance")
    with torch.no_grad():
        for name, batch in (("generated", images), ("reference", reference)):
            check_finite(classifier.features(batch.to(classifier.device)),
                         f"the classifier features of the {name} images")
    metric = FrechetInceptionDistance(
        feature=FeatureExtractor(classifier), normalize=True, input_img_size=tuple(images.shape[1:])
    ).to(classifier.device)
    metric.update(reference.to(classifier.device), real=True)
    metric.update(images.to(classifier.device), real=False)
    return metric.compute().item()


def digits_quality(classifier: DigitsClassifier, held_out: torch.Tensor):
    """The bench's model-specific figures for digits: `fn(images, conditions) -> {class_acc, fd}`."""

    def quality(images: torch.Tensor, conditions: list[dict]) -> dict:
        labels = torch.tensor([int(c["class_labels"]) for c in conditions])
        return {"class_acc": class_accuracy(classifier, images, labels),
                "fd": frechet_distance(classifier, images, held_out)}

    return quality
