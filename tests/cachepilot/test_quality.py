import torch

from cachepilot.embedded.digits.metrics import class_accuracy, frechet_distance
from cachepilot.embedded.digits.data import load_digits_split


def test_classifier_is_accurate_on_held_out_digits(classifier):
    split = load_digits_split()
    assert class_accuracy(classifier, split.held_out_images, split.held_out_labels) >= 0.95


def test_frechet_distance_orders_image_sets(classifier):
    split = load_digits_split()
    same = frechet_distance(classifier, split.held_out_images, split.held_out_images)
    floor = frechet_distance(classifier, split.train_images, split.held_out_images)
    noise = frechet_distance(classifier, torch.rand(270, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                             split.held_out_images)
    assert abs(same) < 1e-3
    assert 0 < floor < noise
