"""dive-compatible image efficiency: the score, the wasted bytes and the paths that waste them.

dive (github.com/wagoodman/dive, ``dive/filetree/efficiency.go``) builds one file tree per
layer tar and visits every *leaf* of every layer, in layer order and, within a layer,
children before parents in name order. Per path it keeps the cumulative size over all
layers, the smallest size seen, and how many layers touched it. A whiteout counts 0 when
it deleted a file, and the size of the whole subtree below when it deleted a directory
(looked up in the stack of the layers *before* it). Then::

    efficiency  = Σ min size / Σ cumulative size      (1.0 when nothing was seen)
    inefficient = paths seen in two or more layers
    wasted      = Σ cumulative size over the inefficient paths (the first copy too)
    size        = Σ layer sizes, a layer's size being the sum of its tar header sizes
    user size   = size without layer 0

lamina reproduces the quirks that change the numbers: opaque markers (``.wh..wh..opq``)
are ignored, a directory implied by a deeper path but absent from the tar gets an empty
payload (size 0, not a directory), and a later header for an existing path replaces its
payload.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from lamina.core.errors import ArchiveError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_PREFIX = ".wh..wh.."


@dataclass(frozen=True)
class WastedPath:
    """One path that more than one layer wrote or deleted.

    Attributes:
        path: absolute path in the image (``/root/saved.txt``).
        count: how many layers touched it.
        size: bytes summed over every layer that touched it (dive's "total space").
    """

    path: str
    count: int
    size: int


@dataclass(frozen=True)
class Analysis:
    """dive's analysis of one image.

    Attributes:
        image: the reference that was analysed.
        efficiency: dive's score in [0, 1].
        size_bytes: sum of every layer's size.
        user_size_bytes: the same without the base layer.
        wasted_bytes: bytes of the inefficient paths, every copy counted.
        wasted_user_percent: ``wasted_bytes / user_size_bytes`` (a ratio, as dive names it).
        inefficiencies: the wasted paths, biggest first.
        layer_sizes: each layer's size, base first.
    """

    image: str
    efficiency: float
    size_bytes: int
    user_size_bytes: int
    wasted_bytes: int
    wasted_user_percent: float
    inefficiencies: tuple[WastedPath, ...]
    layer_sizes: tuple[int, ...] = ()


class _Node:
    """A node of one layer's file tree (dive's FileNode, reduced to what the score needs)."""

    __slots__ = ("children", "is_dir", "name", "parent", "size")

    def __init__(self, name: str, parent: _Node | None, size: int = 0, is_dir: bool = False):
        self.name = name
        self.parent = parent
        self.children: dict[str, _Node] = {}
        self.size = size
        self.is_dir = is_dir

    def path(self) -> str:
        """The node's path; a whiteout leaf names the path it deletes."""
        names: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            name = node.name
            if node is self and name.startswith(WHITEOUT_PREFIX):
                name = name[len(WHITEOUT_PREFIX) :]
            names.append(name)
            node = node.parent
        return "/" + "/".join(reversed(names))

    def is_whiteout(self) -> bool:
        return self.name.startswith(WHITEOUT_PREFIX)

    def walk_child_first(self) -> Iterator[_Node]:
        """Every node below (not this one), children before parents, names sorted.

        Iterative: a layer may be thousands of directories deep.
        """
        stack: list[tuple[_Node, Iterator[str]]] = [(self, iter(sorted(self.children)))]
        while stack:
            node, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if stack:
                    yield node
                continue
            child = node.children[name]
            stack.append((child, iter(sorted(child.children))))

    def subtree_size(self) -> int:
        """This node's size plus every descendant's."""
        return self.size + sum(child.size for child in self.walk_child_first())

    def copy(self, parent: _Node | None = None) -> _Node:
        top = _Node(self.name, parent, self.size, self.is_dir)
        pending = [(self, top)]
        while pending:
            node, twin = pending.pop()
            for name, child in node.children.items():
                copied = _Node(child.name, twin, child.size, child.is_dir)
                twin.children[name] = copied
                pending.append((child, copied))
        return top


class Tree:
    """One layer's file tree, as dive builds it from the tar headers."""

    def __init__(self) -> None:
        self.root = _Node("", None)
        self.file_size = 0

    def add(self, path: str, size: int, is_dir: bool) -> None:
        names = [n for n in path.strip("/").split("/") if n]
        node = self.root
        for i, name in enumerate(names):
            child = node.children.get(name)
            if child is None:
                # dive never materialises opaque markers (nor anything below one).
                if name.startswith(OPAQUE_PREFIX):
                    return
                child = _Node(name, node)
                node.children[name] = child
            node = child
            if i == len(names) - 1:
                node.size, node.is_dir = size, is_dir

    def get(self, path: str) -> _Node | None:
        node = self.root
        for name in path.strip("/").split("/"):
            if not name:
                continue
            child = node.children.get(name)
            if child is None:
                return None
            node = child
        return node

    def remove(self, path: str) -> None:
        node = self.get(path)
        if node is not None and node.parent is not None:
            del node.parent.children[node.name]

    def stack(self, upper: Tree) -> None:
        """Applies ``upper`` on top of this tree (dive's FileTree.Stack)."""
        for node in upper.root.walk_child_first():
            if node.is_whiteout():
                self.remove(node.path())
            else:
                self.add(node.path(), node.size, node.is_dir)

    def copy(self) -> Tree:
        twin = Tree()
        twin.root = self.root.copy()
        twin.file_size = self.file_size
        return twin


def read_layer_tree(stream: IO[bytes], name: str = "layer") -> Tree:
    """Reads one uncompressed layer tar into dive's file tree.

    Raises:
        ArchiveError: the stream is not a readable tar (names ``name``).
    """
    tree = Tree()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                path = posixpath.normpath(member.name)
                if path in (".", "/"):
                    continue
                tree.file_size += member.size
                tree.add(path, member.size, member.isdir())
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"{name}: not a readable layer tar ({exc})") from exc
    return tree


@dataclass
class _PathData:
    cumulative: int = 0
    minimum: int = -1
    count: int = 0


def analyze_trees(trees: list[Tree], image: str = "") -> Analysis:
    """dive's efficiency over layer trees, base first (see the module docstring)."""
    data: dict[str, _PathData] = {}
    inefficient: list[tuple[str, _PathData]] = []
    stacked: Tree | None = None
    for idx, tree in enumerate(trees):
        # The stack of layers 0..idx-1, as dive's StackTreeRange(trees, 0, idx-1) builds it
        # (it starts from a copy of layer 0, so layer 0 is applied twice: harmless).
        if idx == 0:
            stacked = tree.copy()
        elif idx == 1:
            assert stacked is not None
            stacked.stack(trees[0])
        else:
            assert stacked is not None
            stacked.stack(trees[idx - 1])
        for node in tree.root.walk_child_first():
            if node.children:
                continue
            path = node.path()
            entry = data.setdefault(path, _PathData())
            if node.is_whiteout():
                assert stacked is not None
                previous = stacked.get(path)
                if previous is None:
                    # dive logs the missing path and abandons the rest of this layer.
                    log.debug("whiteout of %s deletes nothing below layer %d", path, idx)
                    break
                size = previous.subtree_size() if previous.is_dir else 0
            else:
                size = node.size
            entry.cumulative += size
            if entry.minimum < 0 or size < entry.minimum:
                entry.minimum = size
            entry.count += 1
            if entry.count == 2:
                inefficient.append((path, entry))

    minimum_total = sum(e.minimum for e in data.values())
    cumulative_total = sum(e.cumulative for e in data.values())
    efficiency = 1.0 if cumulative_total == 0 else minimum_total / cumulative_total
    sizes = tuple(t.file_size for t in trees)
    size_bytes = sum(sizes)
    user_size = size_bytes - (sizes[0] if sizes else 0)
    wasted = sum(e.cumulative for _, e in inefficient)
    paths = sorted(
        (WastedPath(path, e.count, e.cumulative) for path, e in inefficient),
        key=lambda w: (-w.size, w.path),
    )
    return Analysis(
        image=image,
        efficiency=efficiency,
        size_bytes=size_bytes,
        user_size_bytes=user_size,
        wasted_bytes=wasted,
        wasted_user_percent=(wasted / user_size) if user_size else 0.0,
        inefficiencies=tuple(paths),
        layer_sizes=sizes,
    )


def analyze_layer_tars(streams: Iterable[IO[bytes]], image: str = "") -> Analysis:
    """dive's analysis of an image given its uncompressed layer tars, base first.

    Args:
        streams: readable binary streams, one per layer, base first.
        image: a name for the result (and for error messages).

    Returns:
        The analysis.

    Raises:
        ArchiveError: a stream is not a tar.
    """
    trees = [read_layer_tree(s, f"{image or 'image'} layer {i}") for i, s in enumerate(streams)]
    return analyze_trees(trees, image)


def analyze_entries(layers: Iterable[Iterable[tuple[str, int, bool]]], image: str = "") -> Analysis:
    """dive's analysis from layer listings already read elsewhere (the Docker backend).

    Args:
        layers: per layer, base first, its tar entries as ``(path, size, is_dir)`` with
            AUFS whiteouts (``.wh.*``) kept as entries.
        image: a name for the result.
    """
    trees: list[Tree] = []
    for entries in layers:
        tree = Tree()
        for path, size, is_dir in entries:
            norm = posixpath.normpath(path)
            if norm in (".", "/"):
                continue
            tree.file_size += size
            tree.add(norm, size, is_dir)
        trees.append(tree)
    return analyze_trees(trees, image)
