"""Procedurally generated captioned scenes: the data of the embedded text-to-image model.

Pure code, no download, infinite and deterministic from a seed. A scene is a 32x32 RGB image in
[0, 1] of 1-3 flat shapes on a dark flat background, with a lowercase caption::

    a small red circle
    a large blue square above a small yellow cross
    a red circle left of a green triangle and a white square
    a purple cross and a small green circle and a large white triangle

Objects have a shape (`SHAPES`), a colour (`COLOURS`), a size (`SIZES`, stated in the caption for
about 70 % of objects) and a centre. Two-object captions always state a relation (`RELATIONS`)
between the first and the second object; three-object captions state one half of the time a
relation between the first two objects, then list the third with "and". A generated relation holds
with a margin (`relation_holds`): the centres differ by at least `RELATION_MARGIN` along the stated
axis, and by no more along the other axis. Objects of one- and two-object scenes do not overlap;
those of three-object scenes may (an object covers at most about half the radius of one drawn
before it), so prompts differ in difficulty. Within a scene every (colour, shape) pair is distinct.
The background (`BACKGROUNDS`) is not captioned: it is free variation, like the unmentioned parts of
a photograph.

Coordinates: `x` rightwards and `y` downwards, both as a fraction of the image side, in [0, 1].

Held-out combinations: the (colour, shape) pairs in `HELD_OUT_PAIRS` never appear in the training
split, neither in images nor captions; the evaluation split has at least one of them in every
scene. So a text-to-image model trained on `split="train"` is evaluated on prompts that combine
words it knows in ways it never saw. The adherence judge, the metric, is trained on every pair
(`split="all"`), as CLIP has seen the world.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cachepilot.errors import InvalidInputError

IMAGE_SIZE = 32

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "white", "purple")
SIZES = ("small", "large")
RELATIONS = ("above", "below", "left of", "right of")
BACKGROUNDS = ("dark grey", "black", "dark brown")

# Well separated in RGB (pairwise distance >= 0.5), and far from every background.
COLOUR_RGB = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.10, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "white": (0.95, 0.95, 0.95),
    "purple": (0.65, 0.10, 0.85),
}
BACKGROUND_RGB = {
    "dark grey": (0.22, 0.22, 0.22),
    "black": (0.04, 0.04, 0.06),
    "dark brown": (0.24, 0.15, 0.09),
}
SIZE_RADIUS = (3.5, 5.5)  # pixels, before a +-8 % jitter
_TRIANGLE_R = 1.35  # a triangle's circumradius / radius (equal areas, roughly)
# Bounding box of each shape around its centre, in radii: (half width, above, below).
_BOX = {"circle": (1.0, 1.0, 1.0), "square": (0.85, 0.85, 0.85),
        "triangle": (0.866 * _TRIANGLE_R, _TRIANGLE_R, _TRIANGLE_R / 2), "cross": (1.0, 1.0, 1.0)}
COLOUR_JITTER = 0.04  # per-channel uniform jitter of an object's colour
SIZE_JITTER = 0.08
SIZE_STATED_P = 0.7
OBJECT_COUNT_P = (0.3, 0.4, 0.3)  # one, two, three objects
RELATION_IN_THREE_P = 0.5
RELATION_MARGIN = 5.0 / IMAGE_SIZE  # a generated relation holds by at least 5 pixels

# (colour, shape) pairs; pair id = colour id * len(SHAPES) + shape id.
PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES)
NUM_PAIRS = len(PAIRS)
# One pair per shape, at most one per colour: every word is still seen in training.
HELD_OUT_PAIRS = frozenset({
    ("purple", "triangle"), ("yellow", "circle"), ("green", "cross"), ("white", "square"),
})
SPLITS = ("train", "eval", "all")

_WORDS = ("a", "and", *SIZES, *COLOURS, *SHAPES, *(w for r in RELATIONS for w in r.split()))
VOCABULARY: tuple[str, ...] = tuple(sorted(set(_WORDS)))  # every word a caption can use
MAX_CAPTION_WORDS = 15  # "a large red triangle left of a small white square and a large green cross"


def pair_id(colour: int, shape: int) -> int:
    return colour * len(SHAPES) + shape


_HELD_OUT_IDS = frozenset(pair_id(COLOURS.index(c), SHAPES.index(s)) for c, s in HELD_OUT_PAIRS)
_TRAIN_IDS = tuple(p for p in range(NUM_PAIRS) if p not in _HELD_OUT_IDS)


# ----------------------------------------------------------------------------- structures

@dataclass(frozen=True)
class ObjectSpec:
    """An object as a caption describes it: ids into COLOURS / SHAPES / SIZES (size None: unstated)."""

    colour: int
    shape: int
    size: int | None = None

    @property
    def pair(self) -> int:
        return pair_id(self.colour, self.shape)

    @property
    def phrase(self) -> str:
        size = f"{SIZES[self.size]} " if self.size is not None else ""
        return f"a {size}{COLOURS[self.colour]} {SHAPES[self.shape]}"


@dataclass(frozen=True)
class PromptSpec:
    """What a caption asks for: objects, and relations (subject index, object index, relation name)."""

    objects: tuple[ObjectSpec, ...]
    relations: tuple[tuple[int, int, str], ...] = ()

    @property
    def caption(self) -> str:
        words = [self.objects[0].phrase]
        rel = {(i, j): r for i, j, r in self.relations}
        for k in range(1, len(self.objects)):
            words.append(rel.get((k - 1, k), "and"))
            words.append(self.objects[k].phrase)
        return " ".join(words)

    @property
    def spec(self) -> PromptSpec:
        return self


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: ids, centre (x right, y down, fraction of the side), radius in pixels, RGB."""

    colour: int
    shape: int
    size: int
    x: float
    y: float
    radius: float
    rgb: tuple[float, float, float]
    size_stated: bool = True

    @property
    def pair(self) -> int:
        return pair_id(self.colour, self.shape)

    @property
    def spec(self) -> ObjectSpec:
        return ObjectSpec(self.colour, self.shape, self.size if self.size_stated else None)


@dataclass(frozen=True)
class Scene:
    """A scene's structured attributes; `render([scene])` draws it and `caption` describes it.

    `relation` (one of RELATIONS, or None) holds between objects[0] (subject) and objects[1].
    Objects are drawn in order, so a later object may cover part of an earlier one.
    """

    objects: tuple[SceneObject, ...]
    relation: str | None
    background: int

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def spec(self) -> PromptSpec:
        relations = ((0, 1, self.relation),) if self.relation is not None else ()
        return PromptSpec(tuple(o.spec for o in self.objects), relations)

    @property
    def caption(self) -> str:
        return self.spec.caption


# ----------------------------------------------------------------------------- captions

def parse_caption(caption: str) -> PromptSpec:
    """A caption back to its structure: `a [size] colour shape (CONNECTIVE a [size] colour shape)*`,
    CONNECTIVE one of "and", "above", "below", "left of", "right of" (a relation binds the object
    before it to the one after it). Case and surrounding spaces are ignored; anything else raises
    `InvalidInputError` naming the offending word."""
    if not isinstance(caption, str):
        raise InvalidInputError(f"a caption must be a string, got {type(caption).__name__}")
    words = caption.lower().split()
    if not words:
        raise InvalidInputError("empty caption: describe at least one object, e.g. 'a red circle'")
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown:
        raise InvalidInputError(f"caption {caption!r}: words outside the vocabulary: {unknown}")
    objects: list[ObjectSpec] = []
    relations: list[tuple[int, int, str]] = []
    i, pending = 0, None

    def expect(condition: bool, what: str):
        if not condition:
            at = words[i] if i < len(words) else "end of caption"
            raise InvalidInputError(f"caption {caption!r}: expected {what} at {at!r}")

    while True:
        expect(i < len(words) and words[i] == "a", "'a'")
        i += 1
        size = None
        if i < len(words) and words[i] in SIZES:
            size, i = SIZES.index(words[i]), i + 1
        expect(i < len(words) and words[i] in COLOURS, "a colour")
        colour, i = COLOURS.index(words[i]), i + 1
        expect(i < len(words) and words[i] in SHAPES, "a shape")
        shape, i = SHAPES.index(words[i]), i + 1
        objects.append(ObjectSpec(colour, shape, size))
        if pending is not None:
            relations.append((len(objects) - 2, len(objects) - 1, pending))
            pending = None
        if i == len(words):
            break
        if words[i] == "and":
            i += 1
        elif words[i] in ("above", "below"):
            pending, i = words[i], i + 1
        elif words[i] in ("left", "right"):
            i += 1
            expect(i < len(words) and words[i] == "of", "'of'")
            pending, i = f"{words[i - 1]} of", i + 1
        else:
            expect(False, "'and' or a relation")
    return PromptSpec(tuple(objects), tuple(relations))


def prompt_spec(item) -> PromptSpec:
    """The `PromptSpec` of a caption, a `Scene` or a `PromptSpec`."""
    if isinstance(item, str):
        return parse_caption(item)
    if isinstance(item, (Scene, PromptSpec)):
        return item.spec
    raise InvalidInputError(f"expected a caption, a Scene or a PromptSpec, got {type(item).__name__}")


def is_held_out(attributes) -> bool:
    """True when a scene / prompt / caption uses any held-out (colour, shape) pair."""
    return any(o.pair in _HELD_OUT_IDS for o in prompt_spec(attributes).objects)


def split_of(caption) -> str:
    """"eval" for a caption (or Scene / PromptSpec) with a held-out pair, else "train"."""
    return "eval" if is_held_out(caption) else "train"


# ----------------------------------------------------------------------------- geometry

def relation_margin(a_xy, b_xy, relation: str):
    """(along, across): how far the subject centre `a` is from `b` in the stated direction (positive
    when the relation is satisfied), and their distance along the other axis. Works on floats,
    numpy arrays and tensors (last axis x, y)."""
    dx, dy = b_xy[..., 0] - a_xy[..., 0], b_xy[..., 1] - a_xy[..., 1]
    if relation == "above":
        return dy, abs(dx)
    if relation == "below":
        return -dy, abs(dx)
    if relation == "left of":
        return dx, abs(dy)
    if relation == "right of":
        return -dx, abs(dy)
    raise InvalidInputError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def relation_holds(a_xy, b_xy, relation: str, margin: float = RELATION_MARGIN) -> bool:
    """The generated scenes' rule: `a` is at least `margin` beyond `b` in the stated direction, and
    that is the dominant axis (the offset along the other axis is no larger)."""
    along, across = relation_margin(np.asarray(a_xy, float), np.asarray(b_xy, float), relation)
    return bool(along >= margin and across <= along)


# ----------------------------------------------------------------------------- sampling

def _check_args(n, split, num_objects):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidInputError(f"n must be an integer >= 0, got {n!r}")
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
    try:
        counts = (1, 2, 3) if num_objects is None else (
            (num_objects,) if isinstance(num_objects, (int, np.integer)) else tuple(num_objects))
    except TypeError:
        counts = ()
    if not counts or any(isinstance(k, bool) or k not in (1, 2, 3) for k in counts):
        raise InvalidInputError(f"num_objects must be 1, 2, 3, a list of those or None, got {num_objects!r}")
    return counts


def _rng(seed) -> np.random.Generator:
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"seed must be an integer >= 0 or a list of those, got {seed!r} ({err})") from None


def _pick_pairs(rng: np.random.Generator, k: int, split: str) -> list[int]:
    if split == "train":
        return [int(p) for p in rng.choice(_TRAIN_IDS, size=k, replace=False)]
    if split == "all":
        return [int(p) for p in rng.choice(NUM_PAIRS, size=k, replace=False)]
    first = int(rng.choice(sorted(_HELD_OUT_IDS)))  # "eval": at least one held-out pair
    rest = [p for p in range(NUM_PAIRS) if p != first]
    pairs = [first, *(int(p) for p in rng.choice(rest, size=k - 1, replace=False))]
    return [pairs[j] for j in rng.permutation(k)]


def _place(rng, boxes, relation, overlap: bool) -> np.ndarray | None:
    """Centres (k, 2) in pixels by vectorised rejection, or None: inside the canvas, the relation
    holding between objects 0 and 1, and no overlap (bounding boxes 1 pixel apart) or, if `overlap`,
    no object covering more than about half of the radius of one drawn before it.
    `boxes` (k, 3): each object's half width, extent above and extent below its centre, in pixels."""
    k, tries = len(boxes), 256
    boxes = np.asarray(boxes)
    lo = np.stack([boxes[:, 0], boxes[:, 1]], -1) + 1.0
    hi = IMAGE_SIZE - np.stack([boxes[:, 0], boxes[:, 2]], -1) - 1.0
    reach = boxes.max(-1)
    for _ in range(50):
        xy = rng.uniform(lo, hi, size=(tries, k, 2))
        ok = np.ones(tries, bool)
        if relation is not None:
            along, across = relation_margin(xy[:, 0] / IMAGE_SIZE, xy[:, 1] / IMAGE_SIZE, relation)
            ok &= (along >= RELATION_MARGIN) & (across <= along)
        for i in range(k):
            for j in range(i + 1, k):
                if overlap:
                    # j is drawn over i: it may cover up to about half of i's radius, no more
                    ok &= np.linalg.norm(xy[:, i] - xy[:, j], axis=-1) >= reach[j] + 0.5 * reach[i] + 0.5
                    continue
                gap_x = np.abs(xy[:, i, 0] - xy[:, j, 0]) - boxes[i, 0] - boxes[j, 0]
                dy = xy[:, j, 1] - xy[:, i, 1]  # > 0: i above j
                gap_y = np.where(dy > 0, dy - boxes[i, 2] - boxes[j, 1], -dy - boxes[j, 2] - boxes[i, 1])
                ok &= (gap_x >= 1.0) | (gap_y >= 1.0)
        if ok.any():
            return xy[int(np.argmax(ok))]
    return None


def _sample_scene(rng: np.random.Generator, split: str, counts: Sequence[int]) -> Scene:
    if len(counts) == 3:
        k = int(rng.choice(3, p=OBJECT_COUNT_P)) + 1
    else:
        k = int(rng.choice(counts))
    pairs = _pick_pairs(rng, k, split)
    shapes = [p % len(SHAPES) for p in pairs]
    colours = [p // len(SHAPES) for p in pairs]
    stated = rng.random(k) < SIZE_STATED_P
    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=(k, 3))
    if k == 2 or (k == 3 and rng.random() < RELATION_IN_THREE_P):
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    else:
        relation = None
    centres = None
    while centres is None:  # redraw the sizes in the (rare) case they leave no room
        sizes = rng.integers(len(SIZES), size=k)
        radii = np.asarray(SIZE_RADIUS)[sizes] * (1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER, size=k))
        boxes = [[f * r for f in _BOX[SHAPES[s]]] for s, r in zip(shapes, radii)]
        centres = _place(rng, boxes, relation, overlap=k == 3)
    background = int(rng.integers(len(BACKGROUNDS)))
    objects = tuple(
        SceneObject(
            colour=colours[i], shape=shapes[i], size=int(sizes[i]),
            x=float(centres[i, 0] / IMAGE_SIZE), y=float(centres[i, 1] / IMAGE_SIZE),
            radius=float(radii[i]),
            rgb=tuple(float(v) for v in np.clip(np.asarray(COLOUR_RGB[COLOURS[colours[i]]]) + jitter[i], 0, 1)),
            size_stated=bool(stated[i]),
        )
        for i in range(k)
    )
    return Scene(objects, relation, background)


def sample_attributes(n: int, seed: int | Sequence[int], split: str = "train", num_objects=None) -> list[Scene]:
    """`n` scenes' attributes (no images), deterministic from `seed` (an integer >= 0 or a list of
    those). `split`: "train" (no held-out pair), "eval" (at least one held-out pair per scene) or
    "all"; `num_objects`: 1, 2, 3, a list of those (drawn uniformly), or None for the default mix
    `OBJECT_COUNT_P`."""
    counts = _check_args(n, split, num_objects)
    rng = _rng(seed)
    return [_sample_scene(rng, split, counts) for _ in range(n)]


# ----------------------------------------------------------------------------- rendering

def _coverage(shape_ids, cx, cy, r) -> torch.Tensor:
    """Anti-aliased coverage (n, k, H, W) in [0, 1] of each object, from signed distances."""
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, 1, -1) - cx[..., None, None]
    dy = grid.view(1, 1, -1, 1) - cy[..., None, None]
    r = r[..., None, None]
    circle = torch.sqrt(dx ** 2 + dy ** 2) - r
    square = torch.maximum(dx.abs(), dy.abs()) - _BOX["square"][0] * r
    big = _TRIANGLE_R * r  # circumradius; pointing up, centred on its centroid
    triangle = torch.maximum(dy - big / 2, torch.maximum(0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy) - big / 2)
    arm = 0.35 * r
    cross = torch.minimum(torch.maximum(dx.abs() - r, dy.abs() - arm), torch.maximum(dx.abs() - arm, dy.abs() - r))
    sd = torch.stack([circle, square, triangle, cross])  # order of SHAPES
    sd = torch.gather(sd, 0, shape_ids[None, ..., None, None].expand(1, *sd.shape[1:]))[0]
    return (0.5 - sd).clamp(0.0, 1.0)


def render(scenes: Sequence[Scene]) -> torch.Tensor:
    """Draw scenes: (n, 3, 32, 32) float32 in [0, 1], objects composited in order."""
    n = len(scenes)
    if n == 0:
        return torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE)
    k = max(s.num_objects for s in scenes)
    pad = SceneObject(0, 0, 0, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0))  # zero radius, masked by `valid`
    rows = [list(s.objects) + [pad] * (k - s.num_objects) for s in scenes]
    shape_ids = torch.tensor([[o.shape for o in row] for row in rows], dtype=torch.long)
    geometry = torch.tensor([[(o.x * IMAGE_SIZE, o.y * IMAGE_SIZE, o.radius) for o in row] for row in rows])
    cx, cy, r = geometry.unbind(-1)
    valid = torch.tensor([[1.0] * s.num_objects + [0.0] * (k - s.num_objects) for s in scenes])
    rgb = torch.tensor([[o.rgb for o in row] for row in rows])
    alpha = _coverage(shape_ids, cx, cy, r) * valid[..., None, None]
    background = torch.tensor([BACKGROUND_RGB[BACKGROUNDS[s.background]] for s in scenes])
    image = background[:, :, None, None].expand(n, 3, IMAGE_SIZE, IMAGE_SIZE).clone()
    for j in range(k):
        a = alpha[:, j, None]
        image = image * (1 - a) + rgb[:, j, :, None, None] * a
    return image.clamp(0.0, 1.0)


def sample_scenes(n: int, seed: int | Sequence[int], split: str = "train", num_objects=None
                  ) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """`n` scenes deterministic from `seed`: images (n, 3, 32, 32) float32 in [0, 1], their captions,
    and their attributes (`Scene`: per object colour / shape / size ids, centre x / y, ...).

    The default split is "train": a generator's training data holds no held-out pair. See
    `sample_attributes` for `split` and `num_objects`."""
    scenes = sample_attributes(n, seed, split, num_objects)
    return render(scenes), [s.caption for s in scenes], scenes


def scene_batches(batch_size: int, seed: int, split: str = "train", num_objects=None
                  ) -> Iterator[tuple[torch.Tensor, list[str], list[Scene]]]:
    """An infinite stream of fresh batches `(images, captions, scenes)`; batch `i` is
    `sample_scenes(batch_size, seed=[seed, i])`'s, so the stream is reproducible and resumable."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_args(batch_size, split, num_objects)
    i = 0
    while True:
        yield sample_scenes(batch_size, [seed, i], split, num_objects)
        i += 1


def training_prompts(n: int, seed: int = 0, num_objects=None) -> tuple[list[str], list[Scene]]:
    """Captions (and their scenes) of the training split: no held-out (colour, shape) pair."""
    scenes = sample_attributes(n, seed, "train", num_objects)
    return [s.caption for s in scenes], scenes


def evaluation_prompts(n: int, seed: int = 0, num_objects=None) -> tuple[list[str], list[Scene]]:
    """Captions (and their scenes) of held-out combinations: each has at least one pair of
    `HELD_OUT_PAIRS`. The scenes are references: the layout a real image of the caption could have."""
    scenes = sample_attributes(n, seed, "eval", num_objects)
    return [s.caption for s in scenes], scenes


# ----------------------------------------------------------------------------- judge targets

def scene_targets(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """Per-pair training targets: presence (n, P) 0/1, centre (n, P, 2) in [0, 1] and size (n, P)
    0/1, the last two meaningful only where present. P = NUM_PAIRS."""
    n = len(scenes)
    presence = torch.zeros(n, NUM_PAIRS)
    centre = torch.zeros(n, NUM_PAIRS, 2)
    size = torch.zeros(n, NUM_PAIRS)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            presence[i, o.pair] = 1.0
            centre[i, o.pair, 0], centre[i, o.pair, 1] = o.x, o.y
            size[i, o.pair] = float(o.size)
    return {"presence": presence, "centre": centre, "size": size}
