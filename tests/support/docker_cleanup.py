"""Best-effort removal of the images a Docker test session created."""

from __future__ import annotations

import contextlib


def remove_images_tagged(prefix: str, timeout: int = 120) -> None:
    """Removes every image with a tag starting with ``prefix``, then what that leaves
    dangling. Does nothing when no daemon answers (there is nothing to clean)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(version="auto", timeout=timeout)
    except Exception:
        return
    try:
        for image in client.api.images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith(prefix):
                    with contextlib.suppress(Exception):  # best effort cleanup
                        client.api.remove_image(tag, force=True)
        # One prune frees parents that the previous one left childless.
        for _ in range(5):
            if not client.api.prune_images(filters={"dangling": True}).get("ImagesDeleted"):
                break
    finally:
        client.close()
