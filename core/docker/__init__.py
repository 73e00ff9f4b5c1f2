"""Engines other than the embedded store.

``docker``: :class:`lamina.core.docker.engine.DockerEngine`, the engine Protocol over a
real Docker Engine reached through its API with the ``docker`` SDK (``DOCKER_HOST`` and
Docker's TLS variables respected). ``docker_save`` reads a layer's file changes from an
image's saved tar stream; ``docker_build`` drives the classic builder and records each
build's inputs so a miss can be explained.
"""
