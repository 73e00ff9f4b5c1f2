"""dive's analysis of an image in the embedded store, from its regenerated layer tars."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from lamina.core.accounting.dive import Analysis, Tree, analyze_trees, read_layer_tree
from lamina.core.errors import ArchiveError, LaminaError

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store


def analyze(store: Store, image_ref: str) -> Analysis:
    """dive's analysis of one image in a lamina store.

    Args:
        store: the store.
        image_ref: tag, full ID or unique ID prefix.

    Returns:
        The analysis, with every layer's tar regenerated from the store.

    Raises:
        NotFound: no such image.
        ArchiveError: a layer cannot be regenerated as a tar.
    """
    image_id = store.images.resolve(image_ref)
    summary = store.images.summary(image_id)
    trees: list[Tree] = []
    for i, chain_id in enumerate(summary.layers):
        with tempfile.TemporaryFile(
            dir=store.home / "tmp" if (store.home / "tmp").is_dir() else None
        ) as spool:
            try:
                store.layers.write_tar(chain_id, spool)
            except LaminaError:
                raise
            except OSError as exc:
                raise ArchiveError(
                    f"{image_ref}: layer {i} ({chain_id}) cannot be read: {exc}"
                ) from exc
            spool.seek(0)
            trees.append(read_layer_tree(spool, f"{image_ref} layer {i} ({chain_id})"))
    return analyze_trees(trees, image_ref)
