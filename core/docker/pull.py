"""Pull and push through a Docker Engine, with lamina's pull plan first.

The plan is computed the same way as for lamina's own store: the registry's manifest
(and the config, unless the daemon has the image) against the daemon's layers, by
chainID and diffID. The transfer itself is the daemon's (``POST /images/create`` and
``/images/{name}/push``), with the user's stored credentials passed as
``X-Registry-Auth``; its JSON progress stream is turned into lamina's transfer events.

Docker decides what to download by compressed digest (its v2 metadata), not diffID, so
for a layer it has only from ``docker load``/``import`` it may download a blob the plan
counts as present; it then finds the layer exists and keeps one copy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from lamina.core.digest import short
from lamina.core.docker import client as docker_client
from lamina.core.errors import RegistryError, UsageError
from lamina.core.model import ImageSummary, LayerInfo
from lamina.core.registry.client import RegistryClient, TransferCancelled
from lamina.core.registry.credentials import Credentials, lookup
from lamina.core.registry.manifests import MAX_CONFIG_BYTES, host_platform, parse_platform
from lamina.core.registry.plan import (
    HAVE_DIFF,
    HAVE_LAYER,
    HAVE_NONE,
    PullPlan,
    check_image,
    make_plan,
    resolve,
)
from lamina.core.registry.progress import (
    PullFinished,
    PushFinished,
    TransferEvent,
    TransferFinished,
    TransferProgressed,
    TransferStarted,
)
from lamina.core.registry.reference import parse_reference

log = logging.getLogger(__name__)


def plan_pull(
    images: list[ImageSummary], layers: list[LayerInfo], text: str, platform: str | None = None
) -> PullPlan:
    """The pull plan for ``text`` against the daemon's images and layers.

    Args:
        images: the daemon's images (``DockerEngine.images()``).
        layers: its layers (``DockerEngine.layers()``).
        text: the reference.
        platform: ``os/arch[/variant]``; the host's by default.
    """
    ref = parse_reference(text)
    want = parse_platform(platform) if platform else host_platform()
    with RegistryClient(ref.endpoint, lookup(ref.domain)) as client:
        resolved = resolve(client, ref, want)
        check_image(resolved)
        config = client.get_blob(ref.path, resolved.manifest.config, MAX_CONFIG_BYTES)
    chains = {layer.chain_id for layer in layers}
    diffs = {layer.diff_id for layer in layers}
    users: dict[str, list[str]] = {}
    for image in images:
        for chain_id in image.layers:
            users.setdefault(chain_id, []).append(image.tags[0] if image.tags else short(image.id))

    def have(chain_id: str, diff_id: str) -> str:
        if chain_id in chains:
            return HAVE_LAYER
        return HAVE_DIFF if diff_id in diffs else HAVE_NONE

    image_present = any(image.id == resolved.manifest.config.digest for image in images)
    return make_plan(
        resolved,
        config,
        image_present=image_present,
        # The daemon fetches the config again unless it has the image.
        config_present=image_present,
        have=have,
        shared_with=lambda chain_id: tuple(sorted(users.get(chain_id, ()))),
        engine="docker",
    )


def auth_config(domain: str) -> dict[str, str] | None:
    """The stored credentials as the Engine API's ``X-Registry-Auth`` wants them."""
    creds: Credentials = lookup(domain)
    if creds.identity_token:
        return {"identitytoken": creds.identity_token, "serveraddress": domain}
    if creds:
        return {"username": creds.username, "password": creds.password, "serveraddress": domain}
    return None


def _events(
    stream: Iterator[Any],
    digests: dict[str, str],
    what: str,
    cancel: threading.Event | None,
) -> Iterator[TransferEvent | dict[str, Any]]:
    """Docker's progress lines as transfer events (``aux`` lines passed through)."""
    started: set[str] = set()
    for line in stream:
        if cancel is not None and cancel.is_set():
            raise TransferCancelled(f"{what}: cancelled (the daemon may finish on its own)")
        if not isinstance(line, dict):
            continue
        if line.get("error") or line.get("errorDetail"):
            detail = line.get("errorDetail") or {}
            message = str(line.get("error") or detail.get("message") or "failed")
            raise RegistryError(f"{what}: {message.strip().splitlines()[0]}")
        if "aux" in line:
            yield line
            continue
        layer_id = str(line.get("id") or "")
        digest = digests.get(layer_id)
        if digest is None:
            continue
        status = str(line.get("status") or "")
        progress = line.get("progressDetail") or {}
        if status in ("Downloading", "Pushing") and isinstance(progress, dict):
            total = int(progress.get("total") or 0)
            if digest not in started:
                started.add(digest)
                action = "download" if status == "Downloading" else "upload"
                yield TransferStarted(digest, action, total)
            yield TransferProgressed(digest, int(progress.get("current") or 0), total)
        elif status in ("Pull complete", "Already exists", "Pushed", "Layer already exists"):
            outcome = {
                "Pull complete": "downloaded",
                "Already exists": "present",
                "Pushed": "uploaded",
                "Layer already exists": "exists",
            }[status]
            yield TransferFinished(digest, outcome)
        elif status.startswith("Mounted from"):
            yield TransferFinished(digest, "mounted", 0, status.removeprefix("Mounted ").strip())


def pull(
    api: Any, plan: PullPlan, cancel: threading.Event | None = None
) -> Iterator[TransferEvent]:
    """Has the daemon pull the plan's image (by tag, or by digest without one)."""
    ref = parse_reference(plan.reference)
    repository = ref.familiar_name
    tag = ref.tag or plan.digest
    digests = {short(layer.digest): layer.digest for layer in plan.layers}
    what = f"pull {plan.reference}"
    kwargs: dict[str, Any] = {"tag": tag, "stream": True, "decode": True}
    creds = auth_config(ref.domain)
    if creds:
        kwargs["auth_config"] = creds
    if plan.platform:
        kwargs["platform"] = plan.platform
    stream = docker_client.call(what, api.pull, repository, **kwargs)
    moved = 0
    sizes = {layer.digest: layer.size for layer in plan.layers}
    for event in _events(stream, digests, what, cancel):
        if isinstance(event, dict):
            continue
        if isinstance(event, TransferFinished) and event.outcome == "downloaded":
            moved += sizes.get(event.digest, 0)
        yield event
    image = docker_client.call(what, api.inspect_image, plan.image_id)
    yield PullFinished(str(image.get("Id") or plan.image_id), plan.reference, moved)


def push(
    api: Any, images: list[ImageSummary], text: str, cancel: threading.Event | None = None
) -> Iterator[TransferEvent]:
    """Has the daemon push ``text`` (a tag it has) to its registry."""
    ref = parse_reference(text)
    if ref.digest or not ref.tag:
        raise UsageError(f"push {text}: name a tag, not a digest")
    what = f"push {text}"
    kwargs: dict[str, Any] = {"tag": ref.tag, "stream": True, "decode": True}
    creds = auth_config(ref.domain)
    if creds:
        kwargs["auth_config"] = creds
    stream = docker_client.call(what, api.push, ref.familiar_name, **kwargs)
    # Push lines name layers by the short diffID-based id Docker shows; map what we can.
    digests: dict[str, str] = {}
    for image in images:
        if ref.familiar_tag in image.tags:
            inspect = docker_client.call(what, api.inspect_image, image.id)
            for diff_id in (inspect.get("RootFS") or {}).get("Layers") or []:
                digests[short(diff_id)] = diff_id
    digest, size = "", 0
    for event in _events(stream, digests, what, cancel):
        if isinstance(event, dict):
            aux = event.get("aux") or {}
            digest, size = str(aux.get("Digest") or ""), int(aux.get("Size") or 0)
            continue
        yield event
    if not digest:
        raise RegistryError(f"{what}: the daemon did not say what it pushed")
    yield PushFinished(str(ref), digest, size, 0)
