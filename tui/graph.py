"""The layer graph: which layer sits on which, which images end where, what is shared.

Built once per snapshot from the engine's images and layers, in linear time, so the
views can render 20,000 layers lazily without asking the engine again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from lamina.core import ImageSummary, LayerInfo


@dataclass
class ImageSizes:
    """An image's size split the way ``docker system df -v`` splits it."""

    size: int
    shared: int
    unique: int


@dataclass
class LayerGraph:
    """Images and layers, indexed for the views."""

    images: list[ImageSummary]
    layers: list[LayerInfo]
    instructions: dict[str, str] = field(default_factory=dict)
    by_id: dict[str, LayerInfo] = field(init=False)
    children: dict[str | None, list[str]] = field(init=False)
    images_at: dict[str, list[ImageSummary]] = field(init=False)
    images_using: dict[str, list[ImageSummary]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {layer.chain_id: layer for layer in self.layers}
        self.children = defaultdict(list)
        for layer in self.layers:
            parent = layer.parent if layer.parent in self.by_id else None
            self.children[parent].append(layer.chain_id)
        for kids in self.children.values():
            kids.sort(key=lambda c: (self.by_id[c].created, c))
        self.images_at = defaultdict(list)
        self.images_using = defaultdict(list)
        for image in self.images:
            if image.layers:
                self.images_at[image.layers[-1]].append(image)
            for chain_id in set(image.layers):
                self.images_using[chain_id].append(image)

    @property
    def roots(self) -> list[str]:
        """Base layers (no parent in the store), oldest first."""
        return self.children.get(None, [])

    def created_by(self, chain_id: str) -> str:
        """The instruction that made the layer: its own record, else an image's history."""
        layer = self.by_id.get(chain_id)
        return (layer.created_by if layer else "") or self.instructions.get(chain_id, "")

    def share_count(self, chain_id: str) -> int:
        """How many images use the layer."""
        return len(self.images_using.get(chain_id, ()))

    def layer_size(self, chain_id: str) -> int:
        layer = self.by_id.get(chain_id)
        return layer.size if layer else 0

    def sizes(self, image: ImageSummary) -> ImageSizes:
        """Size, shared size and unique size of an image."""
        total = shared = 0
        for chain_id in dict.fromkeys(image.layers):
            n = self.layer_size(chain_id)
            total += n
            if self.share_count(chain_id) > 1:
                shared += n
        if not self.by_id:
            total = image.size
        return ImageSizes(
            size=total or image.size, shared=shared, unique=(total or image.size) - shared
        )

    def subtree_count(self, chain_id: str) -> int:
        """Layers below (and including) this one."""
        count, stack = 0, [chain_id]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(self.children.get(node, ()))
        return count
