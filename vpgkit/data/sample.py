"""The one sample schema for interleaved image–text data.

A :class:`Sample` is a conversation whose text carries image markers (``<image>``), one per image, in
order; optional in-context examples come first, each a (images, conversation) pair of its own. Which
turns carry loss is explicit (by default the assistant's). Readers for MIMIC-IT, LLaVA, DEMON and caption
lists produce Samples; templates and tokenisation consume them. The JSON form (one object per line in a
``.jsonl`` file) is what vpgkit writes, e.g. for synthetic data::

    {"id": "coco-42-swap", "images": ["a.jpg", "b.jpg"],
     "conversation": [{"role": "user", "text": "<image> <image> Describe the difference between the images."},
                      {"role": "assistant", "text": "The red cup on the left is now blue."}],
     "in_context": [], "meta": {"task": "describe_difference"}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGE_MARKER = "<image>"
ROLES = ("user", "assistant")


@dataclass
class Turn:
    """One message. ``loss``: whether its tokens are trained on (None → True for the assistant only)."""

    role: str
    text: str
    loss: bool | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Turn.role: expected one of {ROLES}, got {self.role!r}")
        if self.loss is None:
            self.loss = self.role == "assistant"


@dataclass
class Example:
    """An in-context example: its own images and conversation, shown before the query."""

    images: list[Any]
    conversation: list[Turn]


@dataclass
class Sample:
    """An interleaved image–text training or evaluation sample.

    Attributes:
        id: unique id (resumable writers skip ids already written).
        images: image references in marker order: paths (relative to the dataset's image root) or arrays.
        conversation: turns; the text of all turns together holds exactly ``len(images)`` markers.
        in_context: examples shown before the conversation (Otter / MIMIC-IT style).
        meta: free-form provenance (task, source ids, edit parameters, …); must be JSON-serialisable.
            One key is read by training: ``fetch_box``, ``[x0, y0, x1, y1]`` in [0, 1] image coordinates,
            the region the instruction is about in every image of the sample (for
            ``trainer.fetch_loss_weight``; see :mod:`vpgkit.training.fetch`).

    Example:
        >>> s = Sample("x", ["a.jpg"], [Turn("user", "<image> What is it?"), Turn("assistant", "A cat.")])
        >>> s.validate().num_images
        1
    """

    id: str
    images: list[Any]
    conversation: list[Turn]
    in_context: list[Example] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        """Images of the in-context examples and of the query together."""
        return sum(len(e.images) for e in self.in_context) + len(self.images)

    def validate(self) -> Sample:
        """Check that every part has as many ``<image>`` markers as images; return self."""
        parts = [(f"in_context[{i}]", e.images, e.conversation) for i, e in enumerate(self.in_context)]
        for where, images, turns in [*parts, ("conversation", self.images, self.conversation)]:
            markers = sum(t.text.count(IMAGE_MARKER) for t in turns)
            if markers != len(images):
                raise ValueError(
                    f"sample {self.id!r}: {where} has {markers} {IMAGE_MARKER} markers but {len(images)} images"
                )
            if not turns:
                raise ValueError(f"sample {self.id!r}: {where} has no turns")
        return self

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (image arrays are not serialisable: write them to files first)."""
        turns = lambda ts: [{"role": t.role, "text": t.text, "loss": t.loss} for t in ts]  # noqa: E731
        return {
            "id": self.id,
            "images": [str(i) for i in self.images],
            "conversation": turns(self.conversation),
            "in_context": [
                {"images": [str(i) for i in e.images], "conversation": turns(e.conversation)}
                for e in self.in_context
            ],
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "sample") -> Sample:
        """Parse the JSON form; ``where`` (e.g. ``"train.jsonl:12"``) prefixes every error."""
        try:
            turns = lambda ts: [Turn(t["role"], t["text"], t.get("loss")) for t in ts]  # noqa: E731
            sample = cls(
                id=str(data["id"]),
                images=list(data.get("images", [])),
                conversation=turns(data["conversation"]),
                in_context=[
                    Example(list(e.get("images", [])), turns(e["conversation"]))
                    for e in data.get("in_context", [])
                ],
                meta=dict(data.get("meta", {})),
            )
        except KeyError as e:
            raise ValueError(
                f"{where}: missing key {e.args[0]!r} (expected id, conversation[role, text])"
            ) from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        try:
            return sample.validate()
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
