"""Exact edits of a scene (recolour / remove / add one object) with difference-caption metadata.

The discriminative pipeline edits *pixels* (attention-guided); these edits act on the scene itself, so
the edited image is rendered cleanly and the difference is known exactly. They make the held-out
mini-DEMON pairs and the language model's difference examples. The metadata has the keys
:class:`synthetic.discriminative.captions.DifferenceCaptioner` reads, so differences are worded the
same way as the synthetic training data's.

Example:
    >>> from synthetic.world.scene import make_scene
    >>> import numpy as np
    >>> scene = make_scene(0, 1)
    >>> edited, meta = edit_scene(scene, np.random.default_rng(0), kinds=("modify",), small_only=True)
    >>> meta["kind"], meta["colour"] != meta["new_colour"]
    ('modify', True)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .scene import COLOURS, SHAPES, Scene, WorldObject, place

__all__ = ["EDIT_KINDS", "edit_scene"]

EDIT_KINDS = ("modify", "delete", "add")


def _meta(scene: Scene, obj: WorldObject, kind: str, **more: Any) -> dict[str, Any]:
    return {"kind": kind, "label": obj.shape, "colour": obj.colour, "box": list(obj.box),
            "height": scene.size, "width": scene.size, "size": obj.size, **more}  # fmt: skip


def edit_scene(
    scene: Scene,
    rng: np.random.Generator,
    kinds: tuple[str, ...] = ("modify", "delete", "add"),
    small_only: bool = True,
    target: WorldObject | None = None,
    cells: list[int] | None = None,
) -> tuple[Scene, dict[str, Any]]:
    """One edit of ``scene``; returns the edited scene and caption metadata.

    Args:
        scene: the original.
        rng: draws the kind, the object and the new colour / cell.
        kinds: edit kinds to draw from (:data:`EDIT_KINDS`).
        small_only: edit (and add) only small objects: the details a caption-trained VPG overlooks.
        target: the object to modify or delete (default: drawn among the candidates).
        cells: free cells an added object may go to (default: every free cell).

    Colours and shapes come from the world's own (:data:`COLOURS`, :data:`SHAPES`); a (colour, shape)
    pair stays unique in the scene.
    """
    kind = kinds[int(rng.integers(len(kinds)))]
    candidates = [o for o in scene.objects if not small_only or not o.salient]
    if kind != "add" and not candidates:
        kind = "add"
    objects = list(scene.objects)
    if kind == "add":
        used = {(o.colour, o.shape) for o in scene.objects}
        pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in used]
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        free = scene.free_cells() if cells is None else cells
        new = place(shape, colour, "small", free[int(rng.integers(len(free)))], rng, scene.size)
        return scene.with_objects([*objects, new]), _meta(scene, new, "add")
    obj = target if target is not None else candidates[int(rng.integers(len(candidates)))]
    k = objects.index(obj)
    if kind == "modify":
        used = {(o.colour, o.shape) for o in scene.objects}
        colours = [c for c in COLOURS if (c, obj.shape) not in used]
        new_colour = colours[int(rng.integers(len(colours)))]
        objects[k] = replace(obj, colour=new_colour)
        return scene.with_objects(objects), _meta(scene, obj, "modify", new_colour=new_colour)
    if kind == "delete":
        del objects[k]
        return scene.with_objects(objects), _meta(scene, obj, "delete")
    raise ValueError(f"edit_scene: unknown kind {kind!r}; expected one of {EDIT_KINDS}")
