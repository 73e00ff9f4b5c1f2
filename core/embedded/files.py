"""An image's files in the embedded store, for comparing images (``lamina diff``)."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from lamina.core.accounting.diff import ImageFiles, LayerFiles, read_layer_files

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store
    from lamina.core.model import HistoryEntry


def image_files(store: Store, ref: str, history: list[HistoryEntry]) -> ImageFiles:
    """Every layer of one image with its entries and content digests, base first.

    Each layer's tar is regenerated from the store into a spool file in the store's tmp
    (the tar-split needs the layer's files read in tar order, once).

    Args:
        store: the store.
        ref: tag, full ID or unique ID prefix.
        history: the image's history (newest first), for each layer's instruction.

    Raises:
        NotFound: no such image.
        ArchiveError: a layer cannot be regenerated as a tar.
    """
    from lamina.core.accounting.diff import layer_instructions

    image_id = store.images.resolve(ref)
    summary = store.images.summary(image_id)
    lines = layer_instructions(history, summary.layers)
    tmp = store.home / "tmp"
    layers: list[LayerFiles] = []
    for i, chain_id in enumerate(summary.layers):
        info = store.layers.get(chain_id)
        with tempfile.TemporaryFile(dir=tmp if tmp.is_dir() else None) as spool:
            store.layers.write_tar(chain_id, spool)
            spool.seek(0)
            layers.append(
                read_layer_files(
                    spool, chain_id, info.diff_id, lines[i], f"{ref} layer {i} ({chain_id})"
                )
            )
    return ImageFiles(ref, image_id, tuple(layers))
