"""Advice on a Dockerfile's layers and cache, proved on its own build history.

Shared logic, like ``accounting``: it reads what an engine recorded (builds, their steps
and reasons, what each build copied from its context, the layers' files) and the
Dockerfile and context on disk, and never writes anything.

* :mod:`~lamina.core.advice.findings`: the records (``Advice``, ``Saving``, ``Proof``,
  ``AdviceReport``), JSON-ready;
* :mod:`~lamina.core.advice.commands`: what a RUN's shell text does (package-index
  updates, installs, cleanups), read word by word;
* :mod:`~lamina.core.advice.ecosystems`: dependency manifests, their installers, and the
  caches a ``RUN --mount=type=cache`` keeps;
* :mod:`~lamina.core.advice.rewrite`: line edits of a Dockerfile and the unified diff
  ``patch -p0`` applies;
* :mod:`~lamina.core.advice.replay`: the cache model run over recorded builds, as a dry
  run, for the Dockerfile as it is and as rewritten;
* :mod:`~lamina.core.advice.rules`: one function per rule;
* :mod:`~lamina.core.advice.advise`: gathering what the rules read, and ``advise``.
"""
