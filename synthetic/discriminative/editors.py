"""Image editors: modify (recolour), swap, delete (classical inpainting), add (paste onto background).

Every editor is a small class with one method, ``edit(context, rng) -> EditResult``: it reads the image,
the region proposals and the chosen (least-attended) region from an :class:`EditContext` and returns the
edited image, the mask of pixels it meant to change and metadata for the caption. An editor that cannot
apply raises :class:`EditSkipped` with a short reason, which the pipeline counts.

Register your own with :func:`register_editor`; the pipeline builds editors by name in each worker
process (so define custom editors in an importable module)::

    @register_editor
    class Invert(Editor):
        name = "invert"
        def edit(self, ctx, rng):
            region = ctx.target_region()
            out = ctx.image.copy(); out[region.mask] = 255 - out[region.mask]
            return EditResult(out, region.mask, ctx.describe(region, kind="modify", new_colour="inverted"))

Example:
    >>> import numpy as np
    >>> from synthetic.discriminative.regions import Region
    >>> img = np.full((32, 32, 3), 200, np.uint8); img[8:16, 8:16] = (220, 20, 20)
    >>> mask = np.zeros((32, 32), bool); mask[8:16, 8:16] = True
    >>> ctx = EditContext(img, np.zeros((32, 32), np.float32), [Region(mask, "square")], target=0)
    >>> result = build_editor("delete").edit(ctx, np.random.default_rng(0))
    >>> result.meta["kind"], result.meta["colour"], int(result.image[12, 12].mean()) > 150
    ('delete', 'red', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .captions import PAINT_HUES, color_name, hsv_to_rgb, rgb_to_hsv
from .regions import Region, choose_least_attended


class EditSkipped(Exception):
    """An editor could not apply to this image; ``reason`` is a short snake_case key for the summary."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class DonorObject:
    """An object cut from another image, for :class:`PasteAddEditor`.

    Attributes:
        pixels: (h, w, 3) uint8 crop around the object.
        mask: (h, w) bool, True on the object.
        label: its name (None → "object").
    """

    pixels: np.ndarray
    mask: np.ndarray
    label: str | None = None

    @classmethod
    def from_region(cls, image: np.ndarray, region: Region) -> DonorObject:
        x0, y0, x1, y1 = region.box
        return cls(image[y0:y1, x0:x1].copy(), region.mask[y0:y1, x0:x1].copy(), region.label)


@dataclass
class EditContext:
    """Everything an editor may use.

    Attributes:
        image: (H, W, 3) uint8 original.
        attention: (H, W) float attention map of the original.
        regions: region proposals.
        target: index of the chosen (least-attended) region, or None if none fits the size limits.
        scores: mean attention per region (computed when omitted).
        background: (H, W) bool, where objects may be pasted (default: everywhere).
        donor: an object from another image, for adding.
        min_fraction, max_fraction: size limits for any further region an editor picks.
    """

    image: np.ndarray
    attention: np.ndarray
    regions: list[Region]
    target: int | None = None
    scores: np.ndarray | None = None
    background: np.ndarray | None = None
    donor: DonorObject | None = None
    min_fraction: float = 0.01
    max_fraction: float = 0.25
    extra: dict[str, Any] = field(default_factory=dict)

    def target_region(self) -> Region:
        if self.target is None:
            raise EditSkipped("no_region")
        return self.regions[self.target]

    def describe(
        self, region: Region, kind: str, image: np.ndarray | None = None, **more: Any
    ) -> dict[str, Any]:
        """Caption metadata of ``region``: kind, label, colour (named from ``image``, default the original), box."""
        pixels = (self.image if image is None else image)[region.mask]
        h, w = self.image.shape[:2]
        return {
            "kind": kind,
            "label": region.label or ("object" if region.source != "superpixel" else "region"),
            "colour": color_name(pixels),
            "box": list(region.box),
            "height": h,
            "width": w,
            "region_source": region.source,
            **more,
        }


@dataclass
class EditResult:
    """An edited image, the pixels the editor meant to change, and caption metadata (JSON-serialisable)."""

    image: np.ndarray
    changed: np.ndarray
    meta: dict[str, Any]


class Editor:
    """Base class: subclasses set ``name`` and implement :meth:`edit`."""

    name: ClassVar[str] = ""

    def edit(self, ctx: EditContext, rng: np.random.Generator) -> EditResult:
        raise NotImplementedError

    def viable(self, ctx: EditContext, region: int) -> bool:
        """A cheap test, before :meth:`edit`, of whether editing ``ctx.regions[region]`` can pass the
        quality filter; the pipeline skips candidates that fail it (default: every region is viable)."""
        return True


EDITORS: dict[str, type[Editor]] = {}


def register_editor(cls: type[Editor]) -> type[Editor]:
    """Class decorator: make ``cls`` buildable by ``cls.name`` (later registrations replace earlier ones)."""
    if not cls.name:
        raise ValueError(f"register_editor: {cls.__name__} needs a non-empty class attribute 'name'")
    EDITORS[cls.name] = cls
    return cls


def build_editor(name: str, **kwargs: Any) -> Editor:
    """Instantiate the editor registered under ``name``."""
    if name not in EDITORS:
        raise KeyError(f"unknown editor {name!r}; registered editors: {sorted(EDITORS)}")
    return EDITORS[name](**kwargs)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a bool mask by ``pixels`` (square structuring element)."""
    if pixels <= 0:
        return mask.copy()
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def inpaint(image: np.ndarray, mask: np.ndarray, method: str = "telea", radius: int = 5) -> np.ndarray:
    """Classical inpainting of ``mask`` (OpenCV Telea or Navier–Stokes); pixels outside stay as they are."""
    import cv2

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"inpaint: method must be 'telea' or 'ns', got {method!r}")
    out = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), radius, flags[method])
    out[~mask] = image[~mask]  # guarantee: only the hole changes
    return out


@register_editor
class RecolorEditor(Editor):
    """Modify: paint the region another named colour (hue set, saturation and brightness floored).

    Args:
        saturation: minimum saturation after recolouring (so gray or white regions take the colour).
        min_value: minimum brightness after recolouring (so black regions take the colour).
    """

    name = "modify"

    def __init__(self, saturation: float = 0.7, min_value: float = 0.45):
        self.saturation, self.min_value = saturation, min_value

    def edit(self, ctx: EditContext, rng: np.random.Generator) -> EditResult:
        region = ctx.target_region()
        before = color_name(ctx.image[region.mask])
        choices = [c for c in PAINT_HUES if c != before]
        new = choices[int(rng.integers(len(choices)))]
        hsv = rgb_to_hsv(ctx.image[region.mask])
        hsv[:, 0] = PAINT_HUES[new]
        hsv[:, 1] = np.maximum(hsv[:, 1], self.saturation)
        hsv[:, 2] = np.maximum(hsv[:, 2], self.min_value)
        out = ctx.image.copy()
        out[region.mask] = hsv_to_rgb(hsv).round().clip(0, 255).astype(np.uint8)
        after = color_name(out[region.mask])
        if after == before:
            raise EditSkipped("colour_unchanged")
        return EditResult(out, region.mask.copy(), ctx.describe(region, "modify", new_colour=after))


@register_editor
class InpaintDeleteEditor(Editor):
    """Delete: inpaint the (slightly grown) region from its surroundings.

    Args:
        method: ``"telea"`` or ``"ns"`` (Navier–Stokes).
        radius: inpainting neighbourhood radius in pixels.
        grow: pixels the mask is dilated by, to remove the object's anti-aliased rim too.
        min_contrast: candidates whose hole differs from its rim by less (mean |Δ| / 255) are skipped
            before inpainting (:meth:`viable`); 0 tries every candidate.
    """

    name = "delete"

    def __init__(self, method: str = "telea", radius: int = 5, grow: int = 2, min_contrast: float = 0.08):
        self.method, self.radius, self.grow = method, radius, grow
        self.min_contrast = min_contrast

    def viable(self, ctx: EditContext, region: int) -> bool:
        """Inpainting fills the hole from its rim, so deleting a region that looks like its rim changes
        nothing (most least-attended superpixels are plain background). Viable when the hole's mean
        |pixel − rim mean| / 255 reaches ``min_contrast`` (the quality filter's default threshold)."""
        hole = dilate(ctx.regions[region].mask, self.grow)
        rim = dilate(hole, self.radius) & ~hole
        if not rim.any() or not hole.any():
            return True
        rim_mean = ctx.image[rim].astype(np.float32).mean(0)
        contrast = np.abs(ctx.image[hole].astype(np.float32) - rim_mean).mean() / 255.0
        return bool(contrast >= self.min_contrast)

    def edit(self, ctx: EditContext, rng: np.random.Generator) -> EditResult:
        region = ctx.target_region()
        hole = dilate(region.mask, self.grow)
        out = inpaint(ctx.image, hole, self.method, self.radius)
        return EditResult(out, hole, ctx.describe(region, "delete"))


def _shift(mask: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source and destination pixel indices of ``mask`` moved by (dy, dx), clipped to the image."""
    ys, xs = np.nonzero(mask)
    ty, tx = ys + dy, xs + dx
    keep = (ty >= 0) & (ty < mask.shape[0]) & (tx >= 0) & (tx < mask.shape[1])
    dest = np.zeros_like(mask)
    dest[ty[keep], tx[keep]] = True
    return (ys[keep], xs[keep]), (ty[keep], tx[keep]), dest


@register_editor
class SwapEditor(Editor):
    """Swap: move the least-attended region to the next least-attended one's place and vice versa.

    Both holes are inpainted first, then each region's pixels are pasted centred on the other's box.

    Args:
        method, radius, grow: inpainting of the holes, as in :class:`InpaintDeleteEditor`.
    """

    name = "swap"

    def __init__(self, method: str = "telea", radius: int = 5, grow: int = 1):
        self.method, self.radius, self.grow = method, radius, grow

    def edit(self, ctx: EditContext, rng: np.random.Generator) -> EditResult:
        a_i = ctx.target
        if a_i is None:
            raise EditSkipped("no_region")
        a = ctx.regions[a_i]
        meta = ctx.describe(a, "swap")
        # The partner: the least-attended other region that fits the size limits, does not overlap the
        # first and looks different from it (swapping two identical patches changes nothing visible).
        excluded, reason = [a_i], "no_second_region"
        while True:
            b_i = choose_least_attended(
                ctx.regions,
                ctx.attention,
                ctx.min_fraction,
                ctx.max_fraction,
                exclude=excluded,
                scores=ctx.scores,
            )
            if b_i is None:
                raise EditSkipped(reason)
            other = ctx.describe(ctx.regions[b_i], "swap")
            if (meta["label"], meta["colour"]) != (other["label"], other["colour"]):
                break
            excluded.append(b_i)
            reason = "indistinguishable_swap"
        b = ctx.regions[b_i]
        holes = dilate(a.mask | b.mask, self.grow)
        out = inpaint(ctx.image, holes, self.method, self.radius)
        centre = lambda r: ((r.box[1] + r.box[3]) // 2, (r.box[0] + r.box[2]) // 2)  # noqa: E731
        (ay, ax), (by, bx) = centre(a), centre(b)
        changed = holes.copy()
        for src, dy, dx in ((a, by - ay, bx - ax), (b, ay - by, ax - bx)):
            from_idx, to_idx, dest = _shift(src.mask, dy, dx)
            out[to_idx] = ctx.image[from_idx]
            changed |= dest
        meta.update(other_label=other["label"], other_colour=other["colour"], other_box=other["box"])
        return EditResult(out, changed, meta)


@register_editor
class PasteAddEditor(Editor):
    """Add: paste an object cut from another image onto background only, where attention is lowest.

    The donor is rescaled so its area is within the size limits (at most ``max_fraction`` and
    ``max_side`` of the image side); candidate positions lie on a grid of ``steps``×``steps``; a position
    qualifies only if the pasted mask lies entirely on ``ctx.background``. Without room, the donor is
    shrunk by the factors in ``shrink`` (never below ``min_fraction``).
    """

    name = "add"

    def __init__(self, steps: int = 16, max_side: float = 0.5, shrink: tuple[float, ...] = (1.0, 0.7, 0.5)):
        self.steps, self.max_side, self.shrink = steps, max_side, shrink

    def _place(
        self, mask: np.ndarray, background: np.ndarray, attention: np.ndarray
    ) -> tuple[int, int] | None:
        """Top-left corner on the grid where ``mask`` lies on background with the least attention."""
        (h, w), (ph, pw) = background.shape, mask.shape
        if ph > h or pw > w:
            return None
        best, best_score = None, np.inf
        for y in np.unique(np.linspace(0, h - ph, self.steps).round().astype(int)):
            for x in np.unique(np.linspace(0, w - pw, self.steps).round().astype(int)):
                if not background[y : y + ph, x : x + pw][mask].all():
                    continue
                score = float(attention[y : y + ph, x : x + pw][mask].mean())
                if score < best_score:
                    best, best_score = (int(y), int(x)), score
        return best

    def edit(self, ctx: EditContext, rng: np.random.Generator) -> EditResult:
        donor = ctx.donor
        if donor is None or not donor.mask.any():
            raise EditSkipped("no_donor")
        h, w = ctx.image.shape[:2]
        area = donor.mask.sum() / (h * w)
        target = float(np.clip(area, ctx.min_fraction, ctx.max_fraction))
        scale = np.sqrt(target / area)
        dh, dw = donor.mask.shape
        scale = min(scale, self.max_side * h / dh, self.max_side * w / dw)
        background = np.ones((h, w), bool) if ctx.background is None else ctx.background
        best = None
        for shrink in self.shrink:  # no room at full size: try smaller, while above the minimum area
            s = scale * shrink
            if shrink < 1 and area * s * s < ctx.min_fraction:
                break
            size = (max(1, round(dw * s)), max(1, round(dh * s)))
            pixels = np.asarray(Image.fromarray(donor.pixels).resize(size, Image.Resampling.BILINEAR))
            mask = np.asarray(Image.fromarray(donor.mask).resize(size, Image.Resampling.NEAREST)).astype(bool)
            if not mask.any():
                raise EditSkipped("no_donor")
            best = self._place(mask, background, ctx.attention)
            if best is not None:
                break
        if best is None:
            raise EditSkipped("no_background_space")
        y, x = best
        ph, pw = mask.shape
        out = ctx.image.copy()
        placed = np.zeros((h, w), bool)
        placed[y : y + ph, x : x + pw] = mask
        out[placed] = pixels[mask]
        region = Region(placed, donor.label or "object", "donor")
        return EditResult(out, placed, ctx.describe(region, "add", image=out))


@register_editor
class DiffusionInpaintEditor(Editor):
    """Replace the region with diffusion inpainting (diffusers), for users with local weights.

    Nothing is downloaded: ``model_dir`` must be a local ``save_pretrained`` directory of an inpainting
    pipeline. The result is composited inside the (grown) region only, so the rest of the image is
    untouched. Run it with ``--workers 1`` (each worker would load its own pipeline).

    Args:
        model_dir: local diffusers inpainting pipeline.
        prompt: text prompt; ``{label}`` is replaced by the region's label.
        steps: denoising steps.
        grow: pixels the region is dilated by.
    """

    name = "diffusion"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        prompt: str = "a different {label}",
        steps: int = 25,
        grow: int = 4,
    ):
        try:
            import diffusers
        except ImportError:
            raise ImportError(
                "the 'diffusion' editor needs diffusers (pip install diffusers) and a local inpainting "
                "model directory; the default editors (modify, swap, delete, add) need neither"
            ) from None
        if model_dir is None or not Path(model_dir).is_dir():
            raise FileNotFoundError(
                f"the 'diffusion' editor needs a local inpainting pipeline directory, got {model_dir!r}; "
                "nothing is downloaded at run time"
            )
        self.pipe = diffusers.AutoPipelineForInpainting.from_pretrained(str(model_dir), local_files_only=True)
        self.prompt, self.steps, self.grow = prompt, steps, grow

    def edit(self, ctx: EditContext, rng: np.random.Generator) -> EditResult:
        import torch

        region = ctx.target_region()
        hole = dilate(region.mask, self.grow)
        meta = ctx.describe(region, "replace")
        h, w = ctx.image.shape[:2]
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        result = self.pipe(
            prompt=self.prompt.format(label=meta["label"]),
            image=Image.fromarray(ctx.image),
            mask_image=Image.fromarray(hole.astype(np.uint8) * 255),
            num_inference_steps=self.steps,
            generator=generator,
        ).images[0]
        painted = np.asarray(result.convert("RGB").resize((w, h), Image.Resampling.BICUBIC))
        out = ctx.image.copy()
        out[hole] = painted[hole]
        return EditResult(out, hole, meta)
