import numpy as np
import pytest
import torch
from PIL import Image

from cachepilot import InvalidInputError
from cachepilot.embedded.digits.metrics import class_accuracy
from cachepilot.embedded.digits.sampling import sample_images


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_end_to_end_from_shipped_checkpoint(pipe):
    out = pipe([3, 7], num_inference_steps=4, generator=[_gen(0), _gen(1)], output_type="pt")
    images = out.images
    assert images.shape == (2, 1, 8, 8)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    pil = pipe(5, num_inference_steps=2, generator=_gen(0)).images
    assert isinstance(pil[0], Image.Image) and pil[0].size == (8, 8)
    arr = pipe(5, num_inference_steps=2, generator=_gen(0), output_type="np").images
    assert isinstance(arr, np.ndarray) and arr.shape == (1, 8, 8, 1)


def test_same_seed_same_image_and_other_seed_differs(pipe):
    a = pipe([4], num_inference_steps=10, generator=_gen(123), output_type="pt").images
    b = pipe([4], num_inference_steps=10, generator=_gen(123), output_type="pt").images
    c = pipe([4], num_inference_steps=10, generator=_gen(124), output_type="pt").images
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_mixed_class_batch_equals_per_class_runs(pipe, guidance):
    classes = [0, 5, 9, 5]
    batch = sample_images(pipe, classes, seed=7, num_inference_steps=8, guidance_scale=guidance)
    singles = torch.cat([
        pipe([c], num_inference_steps=8, guidance_scale=guidance, generator=_gen(7 + i), output_type="pt").images
        for i, c in enumerate(classes)
    ])
    # Batched matmuls may take another BLAS path than batch 1: equal up to float rounding.
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


def test_shipped_model_draws_the_requested_digits(pipe, classifier):
    labels = torch.arange(10).repeat(3)
    images = sample_images(pipe, labels.tolist(), seed=500, num_inference_steps=25)
    assert class_accuracy(classifier, images, labels) >= 0.8


@pytest.mark.parametrize("labels", [[10], [-1], [3, 12], ["a"], [1.5], [], [True]])
def test_unknown_class_ids_are_refused(pipe, labels):
    with pytest.raises(InvalidInputError, match="class"):
        pipe(labels, num_inference_steps=1)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_counts_are_refused(pipe, steps):
    with pytest.raises(InvalidInputError, match="num_inference_steps"):
        pipe([1], num_inference_steps=steps)


@pytest.mark.parametrize("guidance", [-0.5, float("nan"), float("inf")])
def test_bad_guidance_is_refused(pipe, guidance):
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        pipe([1], num_inference_steps=1, guidance_scale=guidance)


def test_generator_count_must_match_batch(pipe):
    with pytest.raises(InvalidInputError, match="generators"):
        pipe([1, 2], num_inference_steps=1, generator=[_gen(0)])
