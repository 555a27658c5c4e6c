"""The tiny world's scenes: a few coloured shapes on a dark background, with exact per-object masks.

A :class:`Scene` holds 7–8 :class:`WorldObject` s, each with a shape, a colour, a size class and one of
the nine positions of a 3×3 grid (``"top left"`` … ``"center"`` … ``"bottom right"``, the words
:func:`synthetic.discriminative.captions.position_words` uses). Objects sit in distinct grid cells, so
they never overlap, and every (colour, shape) pair appears at most once per scene, so "the small blue
square" names exactly one object. The 1–2 ``large``/``medium`` objects are the *salient* ones (what a
web-style caption mentions); the others are ``small`` (8–9 px), the details captions leave out.

Rendering is aliasing-free (no anti-aliasing), so an object's mask is exactly the set of pixels painted in
its colour. Everything derives from the seed: :func:`make_scene` ``(seed, index)`` always returns the
same scene, and :func:`render` the same pixels.

Example:
    >>> scene = make_scene(seed=0, index=3)
    >>> image, masks = render(scene)
    >>> image.shape, image.dtype, masks.shape == (len(scene.objects), 56, 56)
    ((56, 56, 3), dtype('uint8'), True)
    >>> all((image[m] == scene.objects[k].rgb).all() for k, m in enumerate(masks))
    True
    >>> 1 <= len(scene.salient) <= 2
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..discriminative.captions import position_words

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "WorldObject",
    "make_scene",
    "place",
    "render",
    "scene_rng",
]

IMAGE_SIZE = 56  # 8×8 patches of 7 px (65 tokens with CLS): cheap on CPU, small objects still 5–7 px
SHAPES = ("circle", "square", "triangle", "diamond")
# RGB of each colour; each is named the same by synthetic.discriminative.captions.color_name (tested),
# so difference captions written from pixels use the world's words.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (230, 210, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 230),
    "purple": (150, 60, 210),
    "white": (235, 235, 235),
}
BACKGROUND = (30, 30, 36)
# Side in pixels (min, max inclusive) per size class; a grid cell is 56 / 3 ≈ 18.7 px wide.
# Small objects span at least one 7 px patch, so the ViT can encode their shapes.
SIZES: dict[str, tuple[int, int]] = {"large": (16, 17), "medium": (12, 13), "small": (8, 9)}
ROWS, COLS = ("top", "", "bottom"), ("left", "", "right")
# Position word of each grid cell, row-major (index = 3 * row + col).
POSITIONS = tuple((f"{r} {c}".strip() or "center") for r in ROWS for c in COLS)


@dataclass(frozen=True)
class WorldObject:
    """One object of a scene.

    Attributes:
        shape: one of :data:`SHAPES`.
        colour: one of :data:`COLOURS`.
        size: ``"large"``, ``"medium"`` or ``"small"``.
        cell: grid cell 0–8 (row-major); ``position`` is its word.
        box: (x0, y0, x1, y1) pixel box, exclusive ends; side = x1 - x0 = y1 - y0.
    """

    shape: str
    colour: str
    size: str
    cell: int
    box: tuple[int, int, int, int]

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def salient(self) -> bool:
        return self.size != "small"

    def to_json(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "cell": self.cell,
                "position": self.position, "box": list(self.box)}  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """Objects on a ``size`` × ``size`` canvas; ``seed``/``index`` say where it came from."""

    objects: tuple[WorldObject, ...]
    size: int = IMAGE_SIZE
    seed: int = 0
    index: int = 0
    tags: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def salient(self) -> tuple[WorldObject, ...]:
        """The 1–2 large/medium objects, largest first."""
        return tuple(sorted((o for o in self.objects if o.salient), key=lambda o: -(o.box[2] - o.box[0])))

    @property
    def details(self) -> tuple[WorldObject, ...]:
        """The small objects."""
        return tuple(o for o in self.objects if not o.salient)

    def with_objects(self, objects: list[WorldObject] | tuple[WorldObject, ...]) -> Scene:
        """The same scene with other objects (used for edits: recolour, remove, add, move)."""
        return replace(self, objects=tuple(objects))

    def free_cells(self) -> list[int]:
        taken = {o.cell for o in self.objects}
        return [c for c in range(9) if c not in taken]

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed, "index": self.index,
                "objects": [o.to_json() for o in self.objects]}  # fmt: skip


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of scene ``index`` under ``seed`` (``stream`` separates independent uses)."""
    return np.random.default_rng([seed, index, stream, 0x5CE7E])


def place(shape: str, colour: str, size: str, cell: int, rng: np.random.Generator, canvas: int = IMAGE_SIZE):
    """A :class:`WorldObject` of a random side within ``SIZES[size]``, jittered inside grid ``cell``."""
    lo, hi = SIZES[size]
    side = int(rng.integers(lo, hi + 1))
    row, col = divmod(cell, 3)
    edges = np.linspace(0, canvas, 4)
    x0 = _jitter(edges[col], edges[col + 1], side, rng)
    y0 = _jitter(edges[row], edges[row + 1], side, rng)
    obj = WorldObject(shape, colour, size, cell, (x0, y0, x0 + side, y0 + side))
    if position_words(obj.box, canvas, canvas) != obj.position:  # cannot happen with sides ≤ a cell
        raise AssertionError(f"object {obj} lies outside its cell")
    return obj


def _jitter(lo: float, hi: float, side: int, rng: np.random.Generator) -> int:
    first, last = int(np.ceil(lo)), int(np.floor(hi)) - side
    return first if last <= first else int(rng.integers(first, last + 1))


def make_scene(seed: int, index: int, num_objects: tuple[int, int] = (7, 8)) -> Scene:
    """Scene ``index`` of the world with ``seed``: 1–2 salient objects, the rest small.

    Args:
        seed, index: the scene is a pure function of both.
        num_objects: (min, max) objects, inclusive.
    """
    rng = scene_rng(seed, index)
    n = int(rng.integers(num_objects[0], num_objects[1] + 1))
    n_big = 1 if rng.random() < 0.5 else 2
    sizes = ["large"] + (["large" if rng.random() < 0.5 else "medium"] if n_big == 2 else [])
    sizes += ["small"] * (n - n_big)
    cells = rng.permutation(9)[:n]
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = rng.permutation(len(pairs))[:n]
    objects = [
        place(pairs[p][1], pairs[p][0], size, int(cell), rng)
        for p, size, cell in zip(chosen, sizes, cells, strict=True)
    ]
    return Scene(tuple(objects), IMAGE_SIZE, seed, index)


def object_mask(obj: WorldObject, canvas: int = IMAGE_SIZE) -> np.ndarray:
    """(canvas, canvas) bool mask of one object, drawn without anti-aliasing."""
    im = Image.new("1", (canvas, canvas), 0)
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = obj.box
    xe, ye = x1 - 1, y1 - 1  # PIL boxes include their end pixel
    if obj.shape == "circle":
        draw.ellipse((x0, y0, xe, ye), fill=1)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, xe, ye), fill=1)
    elif obj.shape == "triangle":
        draw.polygon([((x0 + xe) / 2, y0), (xe, ye), (x0, ye)], fill=1)
    elif obj.shape == "diamond":
        cx, cy = (x0 + xe) / 2, (y0 + ye) / 2
        draw.polygon([(cx, y0), (xe, cy), (cx, ye), (x0, cy)], fill=1)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
    return np.asarray(im, dtype=bool)


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and masks of ``scene``.

    Returns:
        image: (H, W, 3) uint8 RGB.
        masks: (N, H, W) bool, one per object in ``scene.objects`` order; disjoint.
    """
    s = scene.size
    image = np.empty((s, s, 3), np.uint8)
    image[:] = BACKGROUND
    masks = np.zeros((len(scene.objects), s, s), bool)
    for k, obj in enumerate(scene.objects):
        masks[k] = object_mask(obj, s)
        image[masks[k]] = obj.rgb
    return image, masks
