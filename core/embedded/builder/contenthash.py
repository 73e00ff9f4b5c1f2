"""BuildKit's content checksum of COPY/ADD sources: what they hold, not where they were.

BuildKit keys a file op on the checksum of its source's content
(``cache/contenthash``): per entry the tar header fields mode, uid, gid, size, type,
link target, device numbers and the ``security.capability`` xattr, plus a regular
file's sha256; never the mtime. The file op's key then holds only the source's base
name (``p.Src = path.Base(p.Src)`` in ``solver/llbsolver/ops/file.go``), so moving a
source to ``sub/f`` under the same name hits, where the classic builder, whose tarsum
holds the path, misses. Context files are hashed with uid/gid 0, as the docker CLI
sends them; files of another stage or image with their real owner.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

from lamina.core.dockerfile.quote import go_bytes
from lamina.core.embedded.builder.copy import Source
from lamina.core.embedded.builder.keys import canonical_json


def _capability(root: Path | None, rel: str) -> str:
    if root is None:
        return ""
    try:
        return os.getxattr(root / rel, "security.capability", follow_symlinks=False).hex()
    except OSError:
        return ""


def source_checksum(src: Source, context_root: Path | None = None) -> str:
    # The docker CLI 20.10 does not send a context file's security.capability over its
    # file sync (measured: a setcap alone hits under BuildKit, misses under classic),
    # so the xattr is hashed only when asked for with ``context_root``.
    """The content checksum of one source, its path reduced to its base name.

    Args:
        src: the source (its manifest is built if deferred).
        context_root: the context directory, for a context source's capability xattrs.

    Returns:
        ``sha256:<hex>``.
    """
    if src.tree is not None:
        # Everything the checksum depends on besides the files themselves.
        what = "buildkit " + canonical_json(
            {
                "dir": src.is_dir,
                "archive": src.archive,
                "exclude": list(src.exclude),
                "path": src.path,
                "xattrs": context_root is not None,
            }
        )
        return src.tree(what, lambda: _checksum(src, context_root))
    return _checksum(src, context_root)


def _checksum(src: Source, context_root: Path | None) -> str:
    entries = src.entries()
    if src.origin == "rootfs":
        top = src.path.lstrip("/")
    elif src.origin == "context":
        top = src.path
    else:
        top = src.name
    anchor = posixpath.dirname(top)
    root = context_root if src.origin == "context" else None
    items = []
    for e in entries:
        rel = e.path[len(anchor) + 1 :] if anchor and e.path.startswith(anchor + "/") else e.path
        cap = _capability(root, e.path) if e.type == "file" else ""
        items.append([rel, e.type, e.mode, e.uid, e.gid, e.size, e.digest, e.link, cap])
    doc = {"dir": src.is_dir, "archive": src.archive, "entries": items}
    return "sha256:" + hashlib.sha256(go_bytes(canonical_json(doc))).hexdigest()


def sources_checksum(sources: list[Source], context_root: Path | None = None) -> list[str]:
    """The content checksum of each source, in order."""
    return [source_checksum(s, context_root) for s in sources]
