"""Quality of generated digits, judged by the reference classifier.

class accuracy: does the classifier agree with the requested class?
Fréchet distance: `cachepilot.quality.frechet_distance` with the classifier's penultimate layer as feature
extractor, an offline stand-in for FID (Inception weights cannot be downloaded here).
"""

from __future__ import annotations

import torch

from cachepilot.embedded.digits.classifier import DigitsClassifier
from cachepilot.finite import check_finite
from cachepilot.quality import frechet_distance  # the generic one, in the classifier's features


@torch.no_grad()
def class_accuracy(classifier: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """images (N, 1, 8, 8) in [0, 1]; share of images classified as their requested label."""
    classifier.eval()
    check_finite(images, "the images given to the class accuracy")
    predicted = classifier(images.to(classifier.device)).argmax(-1).cpu()
    return (predicted == labels.cpu()).float().mean().item()


def digits_quality(classifier: DigitsClassifier, held_out: torch.Tensor):
    """The bench's model-specific figures for digits: `fn(images, conditions) -> {class_acc, fd}`."""

    def quality(images: torch.Tensor, conditions: list[dict]) -> dict:
        labels = torch.tensor([int(c["class_labels"]) for c in conditions])
        return {"class_acc": class_accuracy(classifier, images, labels),
                "fd": frechet_distance(classifier, images, held_out)}

    return quality
