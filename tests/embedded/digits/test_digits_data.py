import torch

from cachepilot.embedded.digits.data import load_digits_split


def test_split_is_stratified_disjoint_and_deterministic():
    a, b = load_digits_split(), load_digits_split()
    assert len(a.train_images) + len(a.held_out_images) == 1797
    assert 0.14 < len(a.held_out_images) / 1797 < 0.16
    counts = torch.bincount(a.held_out_labels, minlength=10)
    assert counts.min() >= 25 and counts.max() <= 29
    assert torch.equal(a.held_out_images, b.held_out_images)
    train = {tuple(x.flatten().tolist()) for x in a.train_images}
    overlap = sum(tuple(x.flatten().tolist()) in train for x in a.held_out_images)
    assert overlap < 5  # a handful of digits are pixel-identical duplicates in the source data
    assert a.train_images.min() >= 0 and a.train_images.max() <= 1
