import numpy as np
import pytest
import torch

from cachepilot.embedded.scenes.data import (
    BACKGROUND_RGB, BACKGROUNDS, COLOURS, HELD_OUT_PAIRS, IMAGE_SIZE, MAX_CAPTION_WORDS, PAIRS, RELATIONS,
    SHAPES, VOCABULARY, evaluation_prompts, is_held_out, parse_caption, relation_holds, render,
    sample_attributes, sample_scenes, scene_batches, scene_targets, split_of, training_prompts,
)
from cachepilot.errors import InvalidInputError


@pytest.fixture(scope="module")
def mixed():
    return sample_scenes(400, 11, split="all")


def test_deterministic_from_seed():
    a, b, c = sample_scenes(24, 3), sample_scenes(24, 3), sample_scenes(24, 4)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert a[1] != c[1] and not torch.equal(a[0], c[0])


def test_images_shape_range_and_objects_drawn_where_stated(mixed):
    images, captions, scenes = mixed
    assert images.shape == (400, 3, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    for image, scene in zip(images, scenes):
        top = scene.objects[-1]  # drawn last: nothing covers its centre
        x, y = int(top.x * IMAGE_SIZE), int(top.y * IMAGE_SIZE)
        assert torch.allclose(image[:, y, x], torch.tensor(top.rgb), atol=0.02), scene
    corners = images[:, :, 0, 0]
    expected = torch.tensor([BACKGROUND_RGB[BACKGROUNDS[s.background]] for s in scenes])
    assert (corners - expected).abs().max(1).values.lt(0.02).float().mean() > 0.95


def test_captions_use_only_the_vocabulary_and_parse_back(mixed):
    _, captions, scenes = mixed
    for caption, scene in zip(captions, scenes):
        words = caption.split()
        assert caption == caption.lower() and set(words) <= set(VOCABULARY)
        assert len(words) <= MAX_CAPTION_WORDS
        assert parse_caption(caption) == scene.spec
        assert parse_caption(caption).caption == caption
        assert len({o.pair for o in scene.objects}) == scene.num_objects  # pairs distinct in a scene
    assert {s.num_objects for s in scenes} == {1, 2, 3}
    assert any(s.num_objects == 3 and s.relation is None for s in scenes)
    assert any(s.num_objects == 3 and s.relation is not None for s in scenes)
    assert {s.relation for s in scenes if s.relation} == set(RELATIONS)


def test_stated_relations_hold_geometrically(mixed):
    _, captions, scenes = mixed
    related = [s for s in scenes if s.relation is not None]
    assert len(related) > 100 and all(s.num_objects > 1 for s in related)
    for s in related:
        a, b = s.objects[0], s.objects[1]
        assert relation_holds((a.x, a.y), (b.x, b.y), s.relation), s.caption
        assert s.relation in s.caption
    assert all(s.relation is not None for s in scenes if s.num_objects == 2)
    assert relation_holds((0.5, 0.2), (0.5, 0.8), "above") and not relation_holds((0.5, 0.2), (0.5, 0.8), "below")
    assert relation_holds((0.1, 0.5), (0.9, 0.5), "left of") and not relation_holds((0.5, 0.5), (0.52, 0.9), "left of")


def test_objects_of_one_and_two_object_scenes_do_not_overlap():
    scenes = sample_attributes(200, 5, split="all", num_objects=2)
    images = render(scenes)
    for image, scene in zip(images, scenes):
        for o in scene.objects:  # each centre shows its own colour
            x, y = int(o.x * IMAGE_SIZE), int(o.y * IMAGE_SIZE)
            assert torch.allclose(image[:, y, x], torch.tensor(o.rgb), atol=0.02)


def test_held_out_combinations_never_in_training():
    images, captions, scenes = sample_scenes(300, 2, split="train")
    held = {(COLOURS.index(c), SHAPES.index(s)) for c, s in HELD_OUT_PAIRS}
    for caption, scene in zip(captions, scenes):
        assert all((o.colour, o.shape) not in held for o in scene.objects)
        assert not is_held_out(scene) and split_of(caption) == "train"
        assert not any(f"{c} {s}" in caption.replace("small ", "").replace("large ", "") for c, s in HELD_OUT_PAIRS)
    caps, eval_scenes = evaluation_prompts(200, seed=1)
    assert all(is_held_out(s) and split_of(c) == "eval" for c, s in zip(caps, eval_scenes))
    assert {o.pair for s in eval_scenes for o in s.objects} >= {PAIRS.index(p) for p in HELD_OUT_PAIRS}
    caps, train_scenes = training_prompts(200, seed=1)
    assert all(split_of(c) == "train" for c in caps)
    assert split_of("a small purple triangle") == "eval" and split_of("a purple square") == "train"


def test_difficulty_can_be_chosen():
    for k in (1, 2, 3):
        caps, scenes = evaluation_prompts(20, seed=0, num_objects=k)
        assert all(s.num_objects == k for s in scenes)
        assert all(c.count(" a ") == k - 1 for c in caps)
    _, scenes = training_prompts(30, seed=0, num_objects=[1, 3])
    assert {s.num_objects for s in scenes} == {1, 3}


def test_stream_is_infinite_and_reproducible():
    first = [next(iter_) for iter_ in (scene_batches(8, 7), scene_batches(8, 7))]
    assert first[0][1] == first[1][1]
    stream = scene_batches(8, 7, split="eval")
    batches = [next(stream) for _ in range(3)]
    assert batches[0][1] != batches[1][1] and all(is_held_out(c) for b in batches for c in b[1])


def test_targets():
    _, _, scenes = sample_scenes(5, 0, split="all")
    targets = scene_targets(scenes)
    assert targets["presence"].shape == (5, len(PAIRS)) and targets["centre"].shape == (5, len(PAIRS), 2)
    assert targets["presence"].sum(1).tolist() == [s.num_objects for s in scenes]


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(n=2.5), dict(split="test"), dict(num_objects=4),
                                    dict(num_objects=[]), dict(num_objects=True)])
def test_bad_sampling_arguments(kwargs):
    args = dict(n=4, seed=0) | kwargs
    with pytest.raises(InvalidInputError):
        sample_scenes(**args)


@pytest.mark.parametrize("caption", ["", "   ", "a red dog", "red circle", "a red circle beside a blue square",
                                     "a red circle left a blue square", "a red circle and", 3])
def test_bad_captions_are_refused_clearly(caption):
    with pytest.raises(InvalidInputError):
        parse_caption(caption)


def test_parse_tolerates_case_and_spaces():
    spec = parse_caption("  A Small RED circle   Right of a blue SQUARE ")
    assert spec.caption == "a small red circle right of a blue square"
    assert spec.relations == ((0, 1, "right of"),)
