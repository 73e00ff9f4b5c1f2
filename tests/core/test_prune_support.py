"""The prune and GC tests' world of real images, layers and cache entries works."""

from __future__ import annotations

import os
import stat

from prune_support import assert_tagged_intact, disk_bytes_of_store, image, stack

from lamina.core.embedded.store import Store


def test_stack_makes_real_layers_of_the_requested_size(store: Store) -> None:
    chain = stack(store, [10_000, 50_000], "s")
    sizes = [store.layers.get(c).size for c in chain]
    assert sizes[0] >= 8192 and sizes[1] >= 49_152
    assert store.layers.get(chain[1]).parent == chain[0]
    image_id = image(store, chain, tag="s:1")
    assert store.images.resolve("s:1") == image_id
    assert_tagged_intact(store)
    assert disk_bytes_of_store(store.home) > sum(sizes)
    assert stat.S_ISDIR(os.lstat(store.layers.diff_path(chain[0])).st_mode)
