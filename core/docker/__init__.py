"""The Docker Engine backend: the engine Protocol over a real Docker Engine.

Reached through its API with the ``docker`` SDK (``DOCKER_HOST`` and Docker's TLS
variables respected). The modules, each using the others' public functions only:

* ``engine``: :class:`~lamina.core.docker.engine.DockerEngine`, the Protocol
  implementation; it only routes to the modules below.
* ``client``: connecting, and turning the SDK's failures into one-line errors.
* ``inventory``: reading the daemon's images, history, layers, containers and build
  cache into lamina's records (remembered by image ID).
* ``convert``: pure conversions of Docker's JSON (times, tags, layer stacks, history
  rows) into model and accounting records.
* ``save``: a layer's files, from an image's saved tar stream.
* ``build``: the entry of builds (BuildKit by default, or the classic builder), and the
  classic builder, streamed as lamina's build events; ``buildkit_build`` builds with
  BuildKit through ``POST /build?version=2``, ``trace`` reads BuildKit's progress
  messages and ``vertices`` finds the Dockerfile step of each vertex; ``inputs`` records
  what each step had and explains a miss by each builder's rules; ``records`` keeps
  those records on disk; ``context`` writes the context the way the CLI sends it.
* ``buildkit``: which image layers BuildKit's build cache records hold.
* ``prune``: disk usage and prune plans through lamina's accounting, applied with
  Docker's own prune endpoints.
"""
